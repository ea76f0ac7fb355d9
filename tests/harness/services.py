"""Service processes: ``python -m virtufin.cli.serve <name>``, as deployments run them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from virtufin.ports import free_port

__all__ = ["REPO", "START_TIMEOUT_S", "ServiceProcess", "health", "services_json"]

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 40.0


def services_json(path: Path, ports: dict[str, int]) -> Path:
    """The project's services.json, only the services named in `ports`, each on its port
    and a free health port (so that parallel test clusters never meet)."""
    catalogue = json.loads((REPO / "services.json").read_text())
    entries = []
    for entry in catalogue["services"]:
        if entry["name"] not in ports:
            continue
        entry = dict(entry)
        entry["grpc"] = {**entry["grpc"], "port": ports[entry["name"]], "hosts": []}
        entry["healthPort"] = free_port()
        entries.append(entry)
    path.write_text(json.dumps({"services": entries}, indent=1))
    return path


def health(address: str, timeout: float = 1.0) -> int | None:
    """The overall gRPC health status at `address` (None when unreachable)."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return None
        return int(reply.status)


class ServiceProcess:
    """One service process on `grpc_port`, its output in `log_path`.

    `health_port` (optional) pins the HTTP health endpoint (``/healthz``, ``/metrics``);
    without it the port of the services.json entry is used.
    """

    def __init__(
        self,
        name: str,
        *,
        grpc_port: int,
        services: Path,
        env: dict[str, str],
        log_path: Path,
        health_port: int | None = None,
    ) -> None:
        self.name = name
        self.grpc_port = grpc_port
        self.services = services
        self.env = env
        self.log_path = log_path
        self.health_port = health_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> ServiceProcess:
        command = [sys.executable, "-m", "virtufin.cli.serve", self.name]
        command += ["--services", str(self.services), "--grpc-port", str(self.grpc_port)]
        if self.health_port is not None:
            command += ["--health-port", str(self.health_port)]
        command += ["--grace", "3"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def health(self, timeout: float = 1.0) -> int | None:
        return health(self.address, timeout)

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> ServiceProcess:
        """Wait for SERVING; the test fails with the log's tail if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                code = self.proc.returncode
                pytest.fail(f"{self.name} exited with {code}:\n{self.log()[-4000:]}")
            if self.health() == health_pb2.HealthCheckResponse.SERVING:
                return self
            time.sleep(0.1)
        pytest.fail(f"{self.name} not SERVING after {timeout} s:\n{self.log()[-4000:]}")

    def http(self, path: str) -> tuple[int, str]:
        """GET `path` on the health port: (status, body)."""
        assert self.health_port is not None, "start it with a health_port to call it"
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def stop(self) -> None:
        """SIGTERM (graceful drain), SIGKILL after 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
