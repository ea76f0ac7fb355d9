"""Fixtures of the Dapr adapter tests: a `DaprSidecarStandIn` per test, the SDK pointed at it.

No daprd runs here (DESIGN.md §5): the stand-in in `tests/standins/` implements the Dapr gRPC
API the SDK speaks, so these tests need no server and no marker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from standins.dapr_sidecar_standin import DaprSidecarStandIn

from virtufin.bus.dapr import DaprBus
from virtufin.state.dapr import DaprStateStore


@pytest.fixture
async def sidecar(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DaprSidecarStandIn]:
    """A started stand-in; ``DAPR_*`` variables point the SDK (and its health check) at it."""
    async with DaprSidecarStandIn() as standin:
        for name, value in standin.environ().items():
            monkeypatch.setenv(name, value)
        yield standin


@pytest.fixture
async def bus(sidecar: DaprSidecarStandIn) -> AsyncIterator[DaprBus]:
    opened = DaprBus(pubsub_name="pubsub", dapr_address=sidecar.address)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def store(sidecar: DaprSidecarStandIn) -> AsyncIterator[DaprStateStore]:
    opened = DaprStateStore(store_name="statestore", dapr_address=sidecar.address)
    try:
        yield opened
    finally:
        await opened.close()
