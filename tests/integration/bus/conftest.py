"""Fixtures of the bus failure tests: private NATS servers that a test may stop and restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.nats import PrivateNats


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    """A started private JetStream server, stopped after the test."""
    server = PrivateNats(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
