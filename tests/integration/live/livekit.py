"""Helpers of the live-service tests: datasets, private NATS servers, service processes.

Everything runs on real processes and a real broker: each test cluster gets its own
``nats-server -js`` on a free port (so durable consumers and streams never meet those of
other test runs), its own ``services.json`` with free ports and one SQLite state file shared
by its processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from virtufin.ports import free_port

REPO = Path(__file__).resolve().parents[3]
API_KEY = "live-test-key"
START_TIMEOUT_S = 40.0
BAR_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("symbol", pa.string()),
        ("interval", pa.string()),
    ]
)


# --------------------------------------------------------------------------- data


def zigzag(*legs: tuple[int, float], start: float = 100.0) -> list[float]:
    """Closes moving `step` per bar for `bars` bars, leg after leg: ``zigzag((12, -1), …)``."""
    out, price = [], start
    for bars, step in legs:
        for _ in range(bars):
            price += step
            out.append(round(price, 4))
    return out


def write_daily_bars(
    root: Path, selector: str, symbol: str, closes: Sequence[float], *, first: date
) -> list[date]:
    """One Parquet file per date partition (hive layout), daily bars; returns the dates."""
    days = []
    for i, close in enumerate(closes):
        day = first + timedelta(days=i)
        opened = closes[i - 1] if i else close
        ts = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        table = pa.table(
            {
                "ts": [ts],
                "open": [float(opened)],
                "high": [float(max(opened, close)) + 0.5],
                "low": [float(min(opened, close)) - 0.5],
                "close": [float(close)],
                "volume": [1000.0 + i],
                "symbol": [symbol],
                "interval": ["1d"],
            },
            schema=BAR_SCHEMA,
        )
        folder = root / f"selector={selector}" / f"symbol={symbol}" / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "part-0.parquet", compression="zstd")
        days.append(day)
    return days


# --------------------------------------------------------------------------- NATS


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if Path(p).exists()), None
    )
    if found is None:
        pytest.fail("nats-server is not installed (apt-get install nats-server)")
    return found


class NatsServer:
    """A private ``nats-server -js`` on a free port; `config` may add an authorization block."""

    def __init__(self, folder: Path, *, config: str = "", env: dict[str, str] | None = None):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = config
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def url_for(self, user: str, password: str) -> str:
        return f"nats://{user}:{password}@127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        store = self.folder / "jetstream"
        conf = self.folder / "server.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f"jetstream {{ store_dir: {json.dumps(str(store))} }}\n" + self.config
        )
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)],
            stdout=log,
            stderr=log,
            env={**os.environ, **self.env},
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"nats-server exited:\n{(self.folder / 'server.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        pytest.fail(f"nats-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


# --------------------------------------------------------------------------- services


def services_json(path: Path, ports: dict[str, int]) -> Path:
    """The project's services.json with every gRPC and health port replaced by a free one."""
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
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return None
        return int(reply.status)


class Service:
    """One ``python -m virtufin.cli.serve <name>`` process."""

    def __init__(self, name: str, port: int, services: Path, env: dict[str, str], log: Path):
        self.name = name
        self.port = port
        self.services = services
        self.env = env
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Service:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "virtufin.cli.serve",
                    self.name,
                    "--services",
                    str(self.services),
                    "--grace",
                    "3",
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> Service:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                code = self.proc.returncode
                pytest.fail(f"{self.name} exited with {code}:\n{self.log()[-4000:]}")
            if health(self.address) == health_pb2.HealthCheckResponse.SERVING:
                return self
            time.sleep(0.1)
        pytest.fail(f"{self.name} not SERVING after {timeout} s:\n{self.log()[-4000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Cluster:
    """Services of one test on a private NATS server, sharing a SQLite state file."""

    def __init__(self, root: Path, nats_url: str, names: Sequence[str], **env: str) -> None:
        self.root = root
        self.ports = {name: free_port() for name in names}
        self.services_path = services_json(root / "services.json", self.ports)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VIRTUFIN_")},
            "PYTHONPATH": str(REPO),
            "VIRTUFIN_BUS": "nats",
            "VIRTUFIN_NATS_URL": nats_url,
            "VIRTUFIN_STATE": "sqlite",
            "VIRTUFIN_STATE_DIR": str(root / "state"),
            "VIRTUFIN_API_KEYS": API_KEY,
            "VIRTUFIN_CODE_ROOTS": str(REPO),
            "VIRTUFIN_HOME": str(REPO),
            "VIRTUFIN_LOG_LEVEL": "INFO",
            "VIRTUFIN_HEARTBEAT_SECONDS": "2",
            **env,
        }
        self.processes: list[Service] = []

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def start(self, name: str, *, label: str | None = None, **env: str) -> Service:
        service = Service(
            name,
            self.ports[name],
            self.services_path,
            {**self.env, **env},
            self.root / f"{label or name}.log",
        )
        self.processes.append(service)
        return service.start()

    def stop_all(self) -> None:
        for service in reversed(self.processes):
            service.stop()


async def eventually(
    check: Callable[[], Any], what: str, *, within_s: float = 20.0, every: float = 0.05
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(every)
