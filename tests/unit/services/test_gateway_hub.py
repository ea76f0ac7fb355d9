"""`EventHub`: one shared bus subscription per pattern, refcounted by its listeners.

A listen that fails part-way (the broker refuses one of the filter's patterns) must leave no
trace: no listener registered and no shared subscription kept for it, so nothing is queued
for a stream that never started and an unused pattern does not keep its broker consumer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.gateway.hub import EventFilter, EventHub
from virtufin.bus.memory import MemoryBus
from virtufin.bus.port import AsyncHandler, Subscription
from virtufin.envelope import Envelope
from virtufin.errors import BusError

LIFECYCLE = "workmanager.lifecycle"
REFUSED = "execution.status"


class _RefusingBus(MemoryBus):
    """A memory bus whose broker refuses subscriptions to `REFUSED`."""

    async def subscribe(self, pattern: str, handler: AsyncHandler, **kwargs: Any) -> Subscription:
        if pattern == REFUSED:
            raise BusError(pattern, "consumer cannot be created (test)")
        return await super().subscribe(pattern, handler, **kwargs)


def _event() -> Envelope:
    return Envelope.new(type="com.virtufin.test.ping", source="urn:com.virtufin.test", data={})


async def test_a_failed_listen_leaves_no_listener_and_no_shared_subscription() -> None:
    bus = _RefusingBus()
    hub = EventHub(bus)
    with pytest.raises(BusError):
        await hub.listen(EventFilter.of(topics=[LIFECYCLE, REFUSED]))
    assert hub.listeners == {}
    assert hub.bus_subscriptions == 0
    assert not bus.subscribed(LIFECYCLE)


async def test_a_failed_listen_keeps_the_other_listeners_shared_subscription() -> None:
    bus = _RefusingBus()
    hub = EventHub(bus)
    alive = await hub.listen(EventFilter.of(topics=[LIFECYCLE]))
    with pytest.raises(BusError):
        await hub.listen(EventFilter.of(topics=[LIFECYCLE, REFUSED]))
    assert list(hub.listeners) == [alive.id]
    assert hub.bus_subscriptions == 1
    await bus.publish(LIFECYCLE, _event())
    got = await asyncio.wait_for(alive.next(), 2)
    assert got is not None
    assert got[0] == LIFECYCLE
    await hub.release(alive)  # the last listener: the shared subscription goes
    assert hub.bus_subscriptions == 0
    assert not bus.subscribed(LIFECYCLE)
