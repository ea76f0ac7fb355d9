"""`virtufin up` and `virtufin status` on real processes.

- ``up --bus memory``: every service in one process on one in-process bus; ``status`` through
  the gateway reports them SERVING; SIGTERM stops everything and frees the ports;
- ``up --bus nats``: one process per service (distinct pids in the table); Ctrl-C (SIGINT)
  stops them all; a child that ignores SIGTERM is killed after the grace period;
- failures are loud: a service that cannot start stops the rest with status 1 naming it; an
  unreachable NATS is named; ``status`` exits 1 naming a backend that is down, or the gateway.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness.nats import PrivateNats
from harness.services import REPO, services_json
from livekit import API_KEY, Cluster

from virtufin.ports import free_port

NAMES = ("gateway", "workmanager", "marketdata", "execution")
pytestmark = [pytest.mark.slow]


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("VIRTUFIN_")},
        "PYTHONPATH": str(REPO),
        "VIRTUFIN_API_KEYS": API_KEY,
        "VIRTUFIN_STATE_DIR": str(tmp_path / "state"),
        "VIRTUFIN_HOME": str(REPO),
    }


class Up:
    """``python -m virtufin.cli.up up …`` with its output in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.out = tmp_path / f"up-{time.monotonic_ns()}.out"
        with self.out.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "virtufin.cli.up", "up", *args],
                cwd=REPO,
                env=_env(tmp_path),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, pattern: str, within_s: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"no {pattern!r} in the output of up:\n{self.text()}")

    def finish(self, within_s: float = 30.0) -> int:
        try:
            return self.proc.wait(within_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def _status(tmp_path: Path, services: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "virtufin.cli.up", "status", "--services", str(services), *args],
        cwd=REPO,
        env={**_env(tmp_path), "VIRTUFIN_API_KEY": API_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is dead too
        return stat.read().split()[2] != "Z"


def _table(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in NAMES:
            rows[parts[0]] = parts
    return rows


def test_up_in_one_process_and_status_through_the_gateway(tmp_path: Path) -> None:
    services = services_json(tmp_path / "services.json", {n: free_port() for n in NAMES})
    up = Up(tmp_path, "--bus", "memory", "--services", str(services), "--grace", "3")
    try:
        up.wait_for(r"4 service\(s\) SERVING in this process")
        rows = _table(up.text())
        assert sorted(rows) == sorted(NAMES)
        assert {r[1] for r in rows.values()} == {str(up.proc.pid)}  # one process
        assert {r[3] for r in rows.values()} == {"SERVING"}
        code, text = _status(tmp_path, services)
        assert code == 0, text
        status = _table(text)
        assert {r[2] for r in status.values()} == {"SERVING"}
        assert "all 4 service(s) SERVING" in text
        code, text = _status(tmp_path, services, "--api-key", "wrong")
        assert code == 1
        assert "UNAUTHENTICATED" in text
        up.proc.send_signal(signal.SIGTERM)
        assert up.finish() == 0
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
    assert "SIGTERM received; stopping 4 service(s)" in up.text()
    assert up.text().rstrip().endswith("virtufin up: stopped")
    code, text = _status(tmp_path, services)
    assert code == 1
    assert re.search(r"the gateway at 127\.0\.0\.1:\d+ is unavailable: UNAVAILABLE", text)


def test_up_with_nats_runs_a_process_per_service_and_stops_them(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path / "nats").start()
    services = services_json(tmp_path / "services.json", {n: free_port() for n in NAMES})
    up = Up(
        tmp_path,
        "--bus",
        "nats",
        "--nats-url",
        server.url,
        "--services",
        str(services),
        "--grace",
        "1",
    )
    try:
        up.wait_for(r"4 service\(s\) SERVING; logs in")
        rows = _table(up.text())
        pids = {name: int(row[1]) for name, row in rows.items()}
        assert len(set(pids.values())) == 4
        assert all(_alive(pid) for pid in pids.values())
        assert {r[3] for r in rows.values()} == {"SERVING"}
        assert (tmp_path / "state" / "logs" / "execution.log").exists()
        code, text = _status(tmp_path, services)
        assert code == 0, text
        os.kill(pids["marketdata"], signal.SIGSTOP)  # will not react to SIGTERM
        up.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert up.finish() == 0
        text = up.text()
        assert "SIGINT received; stopping 4 service(s)" in text
        assert re.search(r"marketdata \(pid \d+\) did not stop within 1 s; killing it", text)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids.values())
        for name in ("gateway", "workmanager", "execution"):  # stopped gracefully, not killed
            assert '"msg": "stopped"' in (tmp_path / "state" / "logs" / f"{name}.log").read_text()
    finally:
        if up.proc.poll() is None:
            up.proc.kill()
        server.stop()


def test_up_fails_loudly(tmp_path: Path) -> None:
    ports = {n: free_port() for n in NAMES}
    services = services_json(tmp_path / "services.json", ports)
    # NATS unreachable.
    up = Up(
        tmp_path,
        "--bus",
        "nats",
        "--nats-url",
        f"nats://127.0.0.1:{free_port()}",
        "--services",
        str(services),
    )
    assert up.finish() == 1
    assert "NATS is not reachable at nats://127.0.0.1:" in up.text()
    # A service that cannot start (its port is taken): the others are stopped, status 1.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["marketdata"]))
        taken.listen()
        up = Up(tmp_path, "--bus", "memory", "--services", str(services), "--start-timeout", "30")
        assert up.finish(60) == 1
    text = up.text()
    assert "virtufin up: stopping the others: marketdata cannot start: ConfigError" in text
    assert "cannot bind" in text
    assert text.rstrip().endswith("virtufin up: stopped")


def test_status_names_a_backend_that_is_down(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path / "nats").start()
    cluster = Cluster(tmp_path, server.url, list(NAMES))
    try:
        for name in ("gateway", "workmanager", "execution"):  # not marketdata
            cluster.start(name)
        for service in cluster.processes:
            service.wait_serving()
        code, text = _status(tmp_path, cluster.services_path)
        assert code == 1
        rows = _table(text)
        assert rows["marketdata"][2] == "DOWN"
        assert rows["execution"][2] == "SERVING"
        assert "virtufin status: 1 of 4 service(s) down: marketdata (down)" in text
    finally:
        cluster.stop_all()
        server.stop()


def test_each_process_connects_as_its_own_nats_user() -> None:
    from virtufin.cli.up import ServiceRow, nats_url_for, render_table

    env = {"VIRTUFIN_MARKETDATA_NATS_PASSWORD": "p@ss/word"}
    assert (
        nats_url_for("marketdata", "nats://127.0.0.1:4222,nats://10.0.0.2:4222", env)
        == "nats://marketdata:p%40ss%2Fword@127.0.0.1:4222,nats://marketdata:p%40ss%2Fword@10.0.0.2:4222"
    )
    assert nats_url_for("execution", "nats://127.0.0.1:4222", env) == "nats://127.0.0.1:4222"
    assert nats_url_for("marketdata", "nats://u:p@h:4222", env) == "nats://u:p@h:4222"
    table = render_table(
        [
            ServiceRow("gateway", "127.0.0.1:5002", "SERVING", pid=42),
            ServiceRow("marketdata", "127.0.0.1:15002", detail="refused"),
        ]
    )
    assert table.splitlines() == [
        "NAME        PID  ADDRESS          HEALTH   DETAIL",
        "gateway     42   127.0.0.1:5002   SERVING",
        "marketdata  -    127.0.0.1:15002  DOWN     refused",
    ]
