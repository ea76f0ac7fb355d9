"""Real service processes for the live-service tests (helpers; fixtures are in conftest.py).

Each `Cluster` writes its own ``services.json`` (free ports), shares one SQLite state file in
``tmp_path`` between its processes, and runs every service as
``python -m virtufin.cli.serve <name>`` on the NATS server at 127.0.0.1:4222, with
``VIRTUFIN_API_KEYS=test-key``. Worker groups carry a per-run token, and the durable consumers
they leave on NATS are deleted afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path

import pytest
from harness.services import REPO, ServiceProcess

from virtufin.ports import free_port

__all__ = ["API_KEY", "REPO", "Cluster", "echo_topics", "free_port", "group_name"]

API_KEY = "test-key"
RUN_TOKEN = uuid.uuid4().hex[:8]


def group_name(label: str) -> str:
    """A worker group unique to this test run (its NATS durable is cleaned up afterwards)."""
    return f"itest-{RUN_TOKEN}-{label}"


def echo_topics(label: str) -> tuple[str, str]:
    """Request and reply topics of an echo worker private to this run and `label`, so that
    nobody else's echo worker answers (and none of ours answers anybody else)."""
    request = f"echo.infra.itest-{RUN_TOKEN}-{label}"
    return request, f"{request}.reply"


class Cluster:
    """A gateway and WorkManager replicas sharing one ``services.json`` and one state file."""

    def __init__(self, root: Path, *, workmanager_replicas: int = 1) -> None:
        self.root = root
        self.services_path = root / "services.json"
        self.gateway_port = free_port()
        self.workmanager_ports = [free_port() for _ in range(workmanager_replicas)]
        self.processes: list[ServiceProcess] = []
        wm_hosts = [f"127.0.0.1:{p}" for p in self.workmanager_ports]
        self.services_path.write_text(
            json.dumps(
                {
                    "services": [
                        {
                            "name": "gateway",
                            "daprAppId": "virtufin-gateway",
                            "module": "services.gateway",
                            "role": "gateway",
                            "grpc": {"host": "127.0.0.1", "port": self.gateway_port},
                            "state": {"keys": ["scenario.index"]},
                            "subscribes": [">"],
                        },
                        {
                            "name": "workmanager",
                            "daprAppId": "virtufin-workmanager",
                            "module": "services.workmanager",
                            "role": "production",
                            "grpc": {
                                "host": "127.0.0.1",
                                "port": self.workmanager_ports[0],
                                "hosts": wm_hosts if workmanager_replicas > 1 else [],
                            },
                            "state": {"keys": ["workmanager.worker.index"]},
                        },
                    ]
                }
            )
        )
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VIRTUFIN_")},
            "PYTHONPATH": str(REPO),
            "VIRTUFIN_BUS": "nats",
            "VIRTUFIN_STATE": "sqlite",
            "VIRTUFIN_STATE_DIR": str(root / "state"),
            "VIRTUFIN_API_KEYS": API_KEY,
            "VIRTUFIN_CODE_ROOTS": str(REPO),
            "VIRTUFIN_LOG_LEVEL": "INFO",
            "VIRTUFIN_HOME": str(REPO),
        }

    @property
    def gateway_address(self) -> str:
        return f"127.0.0.1:{self.gateway_port}"

    def start(
        self,
        name: str,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        label: str | None = None,
    ) -> ServiceProcess:
        grpc_port = (
            port
            if port is not None
            else (self.gateway_port if name == "gateway" else self.workmanager_ports[0])
        )
        process = ServiceProcess(
            name,
            grpc_port=grpc_port,
            services=self.services_path,
            env={**self.env, **(env or {})},
            log_path=self.root / f"{label or f'{name}-{grpc_port}'}.log",
            health_port=free_port(),
        )
        self.processes.append(process)
        return process.start()

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def require_nats() -> None:
    """Fail (not skip) when the NATS server the tests need is down."""
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=0.5):
            return
    except OSError:
        pytest.fail("NATS JetStream is not running on 127.0.0.1:4222 (see ../shared/services.md)")


async def delete_test_consumers() -> None:
    """Delete the durable consumers that worker groups of this run left on NATS."""
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222", connect_timeout=2)
    try:
        jsm = nc.jsm()
        for stream in ("VIRTUFIN_INFRA", "VIRTUFIN_ACT", "VIRTUFIN_HYP", "VIRTUFIN_SC"):
            try:
                consumers = await jsm.consumers_info(stream)
            except Exception:
                continue
            for info in consumers:
                description = info.config.description or ""
                if f"itest-{RUN_TOKEN}" in description:
                    try:
                        await jsm.delete_consumer(stream, info.name)
                    except Exception:
                        continue
    finally:
        await nc.close()
