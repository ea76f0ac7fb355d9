"""The in-process bus's synchronous dispatch, which backtests rely on for determinism."""

from __future__ import annotations

import pytest

from virtufin import topics
from virtufin.bus import Delivery, LaneValidator, MemoryBus
from virtufin.envelope import Envelope
from virtufin.errors import PublishRejectedError
from virtufin.scenarios import Scenario, ScenarioRegistry, ScenarioStatus
from virtufin.state import MemoryStateStore

BAR = "hyp.EQ.exchange.sim.ohlcv.candle.1d.AAA"


def _event(n: int) -> Envelope:
    return Envelope.new(type="t", source="s", data=n)


def test_events_published_inside_handlers_are_delivered_breadth_first() -> None:
    bus = MemoryBus()
    seen: list[str] = []

    def on_bar(event: Envelope, _: Delivery) -> None:
        seen.append(f"bar{event.data}")
        bus.publish_sync(topics.order_event("LIVE", "submitted"), _event(event.data * 10))

    def on_order(event: Envelope, _: Delivery) -> None:
        seen.append(f"order{event.data}")

    bus.subscribe_sync(BAR, on_bar)
    bus.subscribe_sync("sc.*.trading.order.>", on_order)
    bus.publish_sync(BAR, _event(1))
    bus.publish_sync(BAR, _event(2))
    assert seen == ["bar1", "order10", "bar2", "order20"]


def test_groups_compete_and_plain_subscribers_fan_out() -> None:
    bus = MemoryBus()
    got: dict[str, list[int]] = {"a": [], "b": [], "fan": []}
    bus.subscribe_sync(BAR, lambda e, d: got["a"].append(e.data), group="g")
    bus.subscribe_sync(BAR, lambda e, d: got["b"].append(e.data), group="g")
    bus.subscribe_sync(BAR, lambda e, d: got["fan"].append(e.data))
    for n in range(6):
        bus.publish_sync(BAR, _event(n))
    assert sorted(got["a"] + got["b"]) == list(range(6))
    assert got["a"]
    assert got["b"]
    assert got["fan"] == list(range(6))


def test_duplicates_by_source_and_id_are_delivered_once() -> None:
    bus = MemoryBus()
    got: list[int] = []
    bus.subscribe_sync(BAR, lambda e, d: got.append(e.data))
    event = _event(1)
    bus.publish_sync(BAR, event)
    bus.publish_sync(BAR, event)
    bus.publish_sync(BAR, event.with_changes(source="other"))
    assert got == [1, 1]


def test_failing_handler_is_retried_then_dead_lettered_with_the_reason() -> None:
    bus = MemoryBus()
    attempts: list[int] = []
    dead: list[Envelope] = []

    def flaky(event: Envelope, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise RuntimeError("strategy blew up")

    bus.subscribe_sync(BAR, flaky, max_deliveries=3)
    bus.subscribe_sync(topics.DEAD_LETTER, lambda e, d: dead.append(e))
    bus.publish_sync(BAR, _event(7))
    assert attempts == [1, 2, 3]
    assert len(dead) == 1
    assert dead[0].data == 7
    assert dead[0].extensions["dlreason"] == "RuntimeError: strategy blew up"
    assert dead[0].extensions["dltopic"] == BAR


async def test_publishing_needs_an_active_registered_scenario() -> None:
    registry = ScenarioRegistry(MemoryStateStore())
    bus = MemoryBus(validator=LaneValidator(registry))
    topic = topics.order_event("S1", "submitted")
    with pytest.raises(PublishRejectedError, match="not registered"):
        bus.publish_sync(topic, _event(1))
    await registry.register(Scenario.backtest("S1", selector="EQ"))
    bus.publish_sync(topic, _event(2))
    await registry.set_status("S1", ScenarioStatus.PAUSED)
    with pytest.raises(PublishRejectedError, match="is paused"):
        bus.publish_sync(topic, _event(3))
    with pytest.raises(PublishRejectedError, match="does not match the topic"):
        bus.publish_sync(
            topics.order_event("LIVE", "submitted"), _event(4).with_changes(scenarioid="S1")
        )
    with pytest.raises(PublishRejectedError, match="MUST NOT carry a selector"):
        bus.publish_sync("act.EQ.exchange.x.trade.tape", _event(5))


def test_dedup_window_remembers_at_least_the_window_and_stays_bounded() -> None:
    bus = MemoryBus(dedup_window=4)
    seen: list[int] = []
    bus.subscribe_sync(BAR, lambda event, _: seen.append(event.data))
    events = [Envelope(id=f"e{n}", source="s", type="t", data=n) for n in range(12)]
    for event in events:
        bus.publish_sync(BAR, event)
    # The last 4 ids are remembered whatever the generation boundary: repeats are dropped.
    for event in events[-4:]:
        bus.publish_sync(BAR, event)
    # The same id from another source is another event.
    bus.publish_sync(BAR, Envelope(id="e11", source="other", type="t", data=99))
    # Ids older than two windows are forgotten (memory stays bounded), so they pass again.
    bus.publish_sync(BAR, events[0])
    assert seen == [*range(12), 99, 0]


def test_a_trusted_publish_skips_checks_but_keeps_breadth_first_order() -> None:
    bus = MemoryBus()
    seen: list[str] = []

    def on_bar(event: Envelope, _: Delivery) -> None:
        seen.append(f"bar{event.data}")
        if event.data == 1:
            bus.publish_trusted(BAR, Envelope(id="inner", source="s", type="t", data=0))
            seen.append("published")

    bus.subscribe_sync(BAR, on_bar)
    bus.publish_trusted(BAR, _event(1))
    assert seen == ["bar1", "published", "bar0"]
    with pytest.raises(PublishRejectedError):
        bus.publish_sync("act.EQ.exchange.sim.ohlcv.candle.1d.AAA", _event(2))


def test_the_bus_tells_whether_anybody_could_receive_a_topic() -> None:
    bus = MemoryBus()
    assert not bus.has_subscribers(BAR)
    assert not bus.subscribed("hyp.>")
    sub = bus.subscribe_sync("hyp.EQ.>", lambda e, d: None)
    assert bus.has_subscribers(BAR)
    assert not bus.has_subscribers("sc.S1.trading.order.filled")
    assert bus.subscribed("hyp.*.exchange.>")
    assert not bus.subscribed("sc.S1.>")
    sub.unsubscribe_sync()
    assert not bus.has_subscribers(BAR)
    assert not bus.subscribed("hyp.>")


def test_a_failing_handler_of_a_queued_event_is_retried_then_dead_lettered() -> None:
    """Events published from inside a handler are delivered by the drain loop, which calls a
    lone sync subscriber directly: its failures are redelivered as on the first event."""
    bus = MemoryBus()
    attempts: list[int] = []
    dead: list[Envelope] = []

    def on_bar(event: Envelope, _: Delivery) -> None:
        bus.publish_sync(topics.order_event("LIVE", "submitted"), _event(7))

    def on_order(event: Envelope, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise RuntimeError("no")

    bus.subscribe_sync(BAR, on_bar)
    bus.subscribe_sync("sc.*.trading.order.>", on_order, max_deliveries=3)
    bus.subscribe_sync(topics.DEAD_LETTER, lambda e, d: dead.append(e))
    bus.publish_sync(BAR, _event(1))
    assert attempts == [1, 2, 3]
    assert bus.dead_letters == 1
    assert len(dead) == 1


def test_a_subscription_unsubscribed_by_an_earlier_handler_gets_nothing_more() -> None:
    """A handler that unsubscribes others (a failing worker's teardown) while the event is
    dispatched: the routes resolved before it must not call them, nor fail the publisher."""
    bus = MemoryBus()
    got: list[str] = []
    later = []

    def first(event: Envelope, _: Delivery) -> None:
        got.append("first")
        for sub in later:
            sub.unsubscribe_sync()

    bus.subscribe_sync(BAR, first)
    later.append(bus.subscribe_sync(BAR, lambda e, d: got.append("plain")))
    later.append(bus.subscribe_sync(BAR, lambda e, d: got.append("g1"), group="g"))
    later.append(bus.subscribe_sync(BAR, lambda e, d: got.append("g2"), group="g"))
    bus.publish_sync(BAR, _event(1))
    assert got == ["first"]
    assert bus.dead_letters == 0
