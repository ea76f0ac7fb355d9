"""(a) A handler that raises, on the real NATS JetStream.

What happens: the failing event is nak'ed with a growing delay and redelivered (attempt 1, 2,
3, 4), then published to ``bus.deadletter`` with the exception as ``dlreason`` and terminated,
so JetStream holds nothing pending for it. Meanwhile the publisher is unaffected: its
publishes return at once, and the events published after the poison are handled before
the poison's retries are over.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from helpers.recording import Recorder, event, eventually

from virtufin import topics
from virtufin.bus.nats import NatsBus, consumer_name

pytestmark = pytest.mark.nats


@pytest.fixture
async def bus(nats_server: str) -> AsyncIterator[NatsBus]:
    opened = await NatsBus.connect(
        url=nats_server, name=f"fail-{uuid.uuid4().hex[:8]}", redelivery_delay_seconds=0.1
    )
    try:
        yield opened
    finally:
        await opened.delete_consumers()
        await opened.close()


async def test_failing_event_is_retried_with_backoff_then_dead_lettered(bus: NatsBus) -> None:
    token = "t" + uuid.uuid4().hex[:12]
    pattern = f"sc.LIVE.trading.{token}.>"
    topic = f"sc.LIVE.trading.{token}.submitted"
    poison = event(-1)
    good = [event(n) for n in range(5)]
    handler = Recorder(fail=lambda env, d: env.id == poison.id)
    dead = Recorder()
    await bus.subscribe(topics.DEAD_LETTER, dead)
    await bus.subscribe(pattern, handler, group="orders", max_deliveries=4)

    started = time.monotonic()
    for ev in (poison, *good):
        await bus.publish(topic, ev)
    publishing = time.monotonic() - started

    await eventually(lambda: poison.id in dead.ids, "the poison dead-lettered")
    await asyncio.sleep(0.5)  # nothing may follow

    assert publishing < 1.0
    tries = [seen for seen in handler.calls if seen.envelope.id == poison.id]
    assert [seen.delivery.attempt for seen in tries] == [1, 2, 3, 4]
    gaps = [b.at - a.at for a, b in itertools.pairwise(tries)]
    assert all(g >= 0.9 * want for g, want in zip(gaps, (0.1, 0.2, 0.4), strict=True)), gaps
    handled = [seen for seen in handler.calls if seen.envelope.id != poison.id]
    assert sorted(seen.envelope.id for seen in handled) == sorted(ev.id for ev in good)
    assert max(seen.at for seen in handled) < tries[-1].at  # the poison blocked nobody

    [letter] = [seen.envelope for seen in dead.calls if seen.envelope.id == poison.id]
    assert letter.extensions["dlreason"] == f"RuntimeError: cannot handle {poison.id}"
    assert letter.extensions["dlattempts"] == 4
    assert letter.extensions["dltopic"] == topic
    assert letter.extensions["dlgroup"] == "orders"
    assert letter.data == poison.data

    stream = bus.streams["sc"]
    name = consumer_name(bus.client_name, pattern, "orders", f"{stream}:{pattern}")
    nc = await nats.connect(bus.url)
    try:
        info = await nc.jetstream().consumer_info(stream, name)
    finally:
        await nc.close()
    assert info.num_ack_pending == 0
    assert info.num_pending == 0
