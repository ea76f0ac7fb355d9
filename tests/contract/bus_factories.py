"""One factory per bus adapter for `test_bus_contract.py`: a new adapter is one more line.

A factory takes the test's `pytest.FixtureRequest` (to reach `nats_server`, …) and the lane
validator the test wants, and returns an async context manager yielding a started bus that
is closed on exit. Server-backed adapters delete the consumers they created; the tests use
unique topics, so parallel tests on one server never see each other's events.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from virtufin.bus.memory import MemoryBus
from virtufin.bus.port import EventBus
from virtufin.bus.validation import LaneValidator

__all__ = ["BUS_FACTORIES", "BUS_MARKS", "BusFactory"]

BusFactory = Callable[
    [pytest.FixtureRequest, LaneValidator | None], AbstractAsyncContextManager[EventBus]
]


@asynccontextmanager
async def memory_bus(
    request: pytest.FixtureRequest, validator: LaneValidator | None
) -> AsyncIterator[EventBus]:
    bus = MemoryBus(validator=validator)
    try:
        yield bus
    finally:
        await bus.close()


@asynccontextmanager
async def nats_bus(
    request: pytest.FixtureRequest, validator: LaneValidator | None
) -> AsyncIterator[EventBus]:
    from virtufin.bus.nats import NatsBus

    url: str = request.getfixturevalue("nats_server")
    bus = await NatsBus.connect(
        url=url,
        validator=validator,
        name=f"contract-{uuid.uuid4().hex[:8]}",
        ack_wait_seconds=5.0,
        redelivery_delay_seconds=0.05,
    )
    try:
        yield bus
    finally:
        await bus.delete_consumers()
        await bus.close()


@asynccontextmanager
async def dapr_bus(
    request: pytest.FixtureRequest, validator: LaneValidator | None
) -> AsyncIterator[EventBus]:
    from standins.dapr_sidecar_standin import DaprSidecarStandIn  # no daprd here: DESIGN §5

    from virtufin.bus.dapr import DaprBus

    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    async with DaprSidecarStandIn() as sidecar:
        for name, value in sidecar.environ().items():  # the SDK's health check goes there
            monkeypatch.setenv(name, value)
        bus = DaprBus(pubsub_name="pubsub", validator=validator, dapr_address=sidecar.address)
        await bus.start()
        try:
            yield bus
        finally:
            await bus.close()


BUS_FACTORIES: dict[str, BusFactory] = {
    "memory": memory_bus,
    "nats": nats_bus,
    "dapr": dapr_bus,
}

#: Server markers of the adapters that need one (pyproject's markers); others need none.
BUS_MARKS: dict[str, tuple[pytest.MarkDecorator, ...]] = {
    "nats": (pytest.mark.nats,),
}
