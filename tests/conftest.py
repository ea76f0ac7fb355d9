"""Shared fixtures. Server-backed tests are marked with the server they need (see pyproject
markers); when that server is down they fail with a message naming it: CI never skips them."""

from __future__ import annotations

import socket

import pytest


def server_up(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require_server(name: str, port: int, start_hint: str) -> None:
    """Fail (not skip) with a clear message when a server the test needs is down."""
    if not server_up("127.0.0.1", port):
        pytest.fail(f"{name} is not running on 127.0.0.1:{port}; start it with: {start_hint}")


@pytest.fixture
def nats_server() -> str:
    require_server("NATS JetStream", 4222, "see ../shared/services.md or .ci/run")
    return "nats://127.0.0.1:4222"


@pytest.fixture
def postgres_dsn() -> str:
    require_server("PostgreSQL", 5432, "pg_ctlcluster --skip-systemctl-redirect 15 main start")
    return "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def redis_url() -> str:
    require_server("Redis", 6379, "redis-server --daemonize yes --port 6379")
    return "redis://127.0.0.1:6379/0"
