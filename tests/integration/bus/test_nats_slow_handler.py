"""A handler slower than the ack wait, in a group of two members on the real NATS.

What happens: while the handler works, the bus tells JetStream the event is in progress
(``+WPI``) before each ack wait runs out, so the event is neither redelivered to the other
member nor to this one: it is handled exactly once, on its first attempt.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from helpers.recording import Recorder, event, eventually

from virtufin.bus.nats import NatsBus
from virtufin.bus.port import Delivery
from virtufin.envelope import Envelope

pytestmark = pytest.mark.nats


async def test_a_slow_handler_is_not_redelivered(nats_server: str) -> None:
    token = "t" + uuid.uuid4().hex[:12]
    topic = f"act.exchange.{token}.trade.tick"
    other = Recorder()
    calls: list[tuple[str, int]] = []
    finished: list[str] = []

    async def slow(envelope: Envelope, delivery: Delivery) -> None:
        calls.append((envelope.id, delivery.attempt))
        await asyncio.sleep(2.5)
        finished.append(envelope.id)

    bus = await NatsBus.connect(url=nats_server, name=f"slow-{token}", ack_wait_seconds=1.0)
    try:
        await bus.subscribe(topic, slow, group="g")
        sent = event()
        await bus.publish(topic, sent)
        await eventually(lambda: len(calls) == 1, "the slow handler started")
        await bus.subscribe(topic, other, group="g")  # an idle member, ready to steal it
        await eventually(lambda: bool(finished), "the slow handler finished")
        await asyncio.sleep(0.5)
        assert calls == [(sent.id, 1)]
        assert other.calls == []
    finally:
        await bus.delete_consumers()
        await bus.close()
