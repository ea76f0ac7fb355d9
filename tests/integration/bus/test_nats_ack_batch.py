"""Acks of unordered subscriptions are batched, on the real NATS JetStream.

What happens: a handled event's ack waits (at most `_ACK_DELAY_SECONDS`) to go out with the
others in one write, so right after a burst JetStream still counts some as unacked, and a
little later none; closing the bus writes the waiting acks first, so a member of the same
group started afterwards gets nothing again (nothing handled is redelivered).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import nats
import pytest
from helpers.recording import Recorder, event, eventually

from virtufin.bus import nats as nats_bus
from virtufin.bus.nats import NatsBus, consumer_name

pytestmark = pytest.mark.nats


async def _ack_pending(bus: NatsBus, pattern: str, group: str) -> int:
    stream = bus.streams["sc"]
    name = consumer_name(bus.client_name, pattern, group, f"{stream}:{pattern}")
    nc = await nats.connect(bus.url)
    try:
        info = await nc.jetstream().consumer_info(stream, name)
    finally:
        await nc.close()
    return int(info.num_ack_pending)


def _lane() -> tuple[str, str]:
    """A fresh (pattern, topic) pair on the trading lane, so runs never see each other."""
    token = "t" + uuid.uuid4().hex[:12]
    return f"sc.LIVE.trading.{token}.>", f"sc.LIVE.trading.{token}.submitted"


async def _burst(bus: NatsBus, pattern: str, topic: str, handler: Recorder) -> None:
    """Subscribe `handler` in group ``g``, publish five events, wait until all are handled."""
    await bus.subscribe(pattern, handler, group="g")
    for envelope in [event(n) for n in range(5)]:
        await bus.publish(topic, envelope)
    await eventually(lambda: len(handler.calls) == 5, "all handled")


async def test_acks_go_out_together_soon_after_handling(
    nats_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nats_bus, "_ACK_DELAY_SECONDS", 0.5)  # long enough to observe
    pattern, topic = _lane()
    bus = await NatsBus.connect(url=nats_server, name=f"acks-{uuid.uuid4().hex[:8]}")
    try:
        await _burst(bus, pattern, topic, Recorder())
        assert await _ack_pending(bus, pattern, "g") > 0  # waiting in the batch
        await eventually_async(lambda: _ack_pending(bus, pattern, "g"), 0)
    finally:
        await bus.delete_consumers()
        await bus.close()


async def test_closing_writes_the_waiting_acks(
    nats_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nats_bus, "_ACK_DELAY_SECONDS", 60.0)  # only closing sends them
    pattern, topic = _lane()
    name = f"acks-{uuid.uuid4().hex[:8]}"
    first = await NatsBus.connect(url=nats_server, name=name, ack_wait_seconds=1.0)
    await _burst(first, pattern, topic, Recorder())
    await first.close()

    second = await NatsBus.connect(url=nats_server, name=name, ack_wait_seconds=1.0)
    try:
        again = Recorder()
        await second.subscribe(pattern, again, group="g")
        assert await _ack_pending(second, pattern, "g") == 0
        await asyncio.sleep(1.5)  # past the ack wait: an unacked event would be back
        assert again.calls == []
    finally:
        await second.delete_consumers()
        await second.close()


async def eventually_async(
    probe: Callable[[], Awaitable[int]], want: int, within: float = 5.0
) -> None:
    deadline = time.monotonic() + within
    while (got := await probe()) != want:
        assert time.monotonic() < deadline, f"still {got}, not {want}"
        await asyncio.sleep(0.05)


async def test_publish_acknowledgements_skip_the_subscription_queue(nats_server: str) -> None:
    """JetStream's answers to publishes are resolved from the read loop (`_Client`), not
    queued for a subscription task: a canary for nats-py internals changing under us."""
    bus = await NatsBus.connect(url=nats_server, name=f"acks-{uuid.uuid4().hex[:8]}")
    try:
        _, topic = _lane()
        await bus.publish(topic, event(0))
        await bus.publish_many([(topic, event(n)) for n in range(1, 4)])
        assert bus._ack_sub is not None
        assert bus._ack_sub._received == 0  # nothing went through the subscription
    finally:
        await bus.close()
