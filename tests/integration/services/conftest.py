"""Fixtures of the live-service tests: clusters of real service processes on NATS."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from svc_cluster import Cluster, delete_test_consumers, require_nats


@pytest.fixture(scope="session", autouse=True)
def _clean_nats_consumers() -> Iterator[None]:
    yield
    try:
        asyncio.run(delete_test_consumers())
    except Exception as exc:  # the server may be gone; nothing to clean then
        print(f"could not clean test consumers: {exc!r}")


@pytest.fixture
def cluster(tmp_path: Path, nats_server: str) -> Iterator[Cluster]:
    """An empty cluster (start the services a test needs); stopped afterwards."""
    made = Cluster(tmp_path)
    try:
        yield made
    finally:
        made.stop_all()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A gateway and one WorkManager, shared by the tests of a module."""
    require_nats()
    made = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        workmanager = made.start("workmanager")
        gateway = made.start("gateway")
        workmanager.wait_serving()
        gateway.wait_serving()
        yield made
    finally:
        made.stop_all()
