"""Private NATS servers for the bus failure tests: a test may stop and restart them."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from virtufin.ports import free_port


def nats_server_binary() -> str:
    found = shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if Path(p).exists()), None
    )
    if found is None:
        pytest.fail("nats-server is not installed (apt-get install nats-server)")
    return found


class PrivateNats:
    """A `nats-server -js` on a free port with its own store dir; restartable in place."""

    def __init__(self, folder: Path, *, config: str | None = None) -> None:
        self.folder = folder
        self.store = folder / "store"
        self.port = free_port()
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [nats_server_binary(), "-js", "-sd", str(self.store), "-a", "127.0.0.1"]
        args += ["-p", str(self.port)]
        if self.config is not None:
            conf = self.folder / "server.conf"
            conf.write_text(self.config.replace("{store}", str(self.store)))
            args += ["-c", str(conf)]
        log = (self.folder / "server.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"nats-server exited: {(self.folder / 'server.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        pytest.fail(f"nats-server on port {self.port} did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
