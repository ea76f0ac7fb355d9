"""Private ``nats-server -js`` processes: a test may stop, kill and restart its own broker
without touching the shared one on 127.0.0.1:4222."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from virtufin.ports import free_port

__all__ = ["PrivateNats", "nats_server_binary"]


def nats_server_binary() -> str:
    """The installed ``nats-server`` (the test fails, naming the package, when there is none)."""
    found = shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if Path(p).exists()), None
    )
    if found is None:
        pytest.fail("nats-server is not installed (apt-get install nats-server)")
    return found


class PrivateNats:
    """A ``nats-server`` with JetStream on a free port and its own store directory.

    Args:
        folder: holds the config, the store and ``server.log``.
        config: more server configuration (e.g. an ``authorization`` block).
        env: more environment for the server process.

    `start` after `stop` restarts it in place: same port, same store, so streams, consumers
    and acknowledged messages survive, as they do when a production broker restarts.
    """

    def __init__(
        self, folder: Path, *, config: str = "", env: dict[str, str] | None = None
    ) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store = folder / "jetstream"
        self.port = free_port()
        self.config = config
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def url_for(self, user: str, password: str) -> str:
        return f"nats://{user}:{password}@127.0.0.1:{self.port}"

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> PrivateNats:
        """Start it and wait until it accepts connections (at most 10 s)."""
        conf = self.folder / "server.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f"jetstream {{ store_dir: {json.dumps(str(self.store))} }}\n" + self.config
        )
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(conf)],
                stdout=log,
                stderr=log,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"nats-server exited:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        pytest.fail(f"nats-server on port {self.port} did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it with `sig` (SIGKILL for a crash); killed outright after 10 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
