"""The event-bus contract: every adapter in `BUS_FACTORIES` must behave as the memory one.

Each test uses topics with a fresh random token, so tests sharing one NATS server never see
each other's events (the dead-letter topic is shared: tests pick their own events by id).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from virtufin import topics
from virtufin.bus.port import Delivery, EventBus
from virtufin.bus.validation import LaneValidator
from virtufin.envelope import Envelope
from virtufin.errors import PublishRejectedError
from virtufin.scenarios import Scenario, ScenarioRegistry
from virtufin.state.memory import MemoryStateStore

from .bus_factories import BUS_FACTORIES, BUS_MARKS, BusFactory

SETTLE = 0.4
"""How long to wait before concluding that nothing more will arrive."""


@pytest.fixture(
    params=[pytest.param(name, marks=BUS_MARKS.get(name, ())) for name in BUS_FACTORIES]
)
def factory(request: pytest.FixtureRequest) -> BusFactory:
    return BUS_FACTORIES[request.param]


@pytest.fixture
async def bus(factory: BusFactory, request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    async with factory(request, None) as opened:
        yield opened


@pytest.fixture
def token() -> str:
    """A topic token no other test uses."""
    return "t" + uuid.uuid4().hex[:12]


class Inbox:
    """A handler that records what it receives."""

    def __init__(self, fail: Callable[[Envelope, Delivery], bool] | None = None) -> None:
        self.events: list[tuple[Envelope, Delivery]] = []
        self._fail = fail

    async def __call__(self, envelope: Envelope, delivery: Delivery) -> None:
        self.events.append((envelope, delivery))
        if self._fail is not None and self._fail(envelope, delivery):
            raise ValueError(f"refusing {envelope.id} on attempt {delivery.attempt}")

    @property
    def ids(self) -> list[str]:
        return [env.id for env, _ in self.events]

    @property
    def topics(self) -> list[str]:
        return [d.topic for _, d in self.events]

    async def wait_for(self, count: int, *, within: float = 10.0) -> None:
        await eventually(lambda: len(self.events) >= count, f"{count} events", within=within)


async def eventually(check: Callable[[], bool], what: str, *, within: float = 10.0) -> None:
    """Poll `check` until it holds; fail naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"expected {what} within {within}s")
        await asyncio.sleep(0.01)


def event(n: int = 0, **attrs: object) -> Envelope:
    return Envelope.new(
        type="com.virtufin.test.happened", source="urn:com.virtufin.test", data={"n": n}, **attrs
    )


def tick(token: str, *rest: str) -> str:
    return ".".join(("act.exchange", token, *(rest or ("trade", "tick"))))


# ------------------------------------------------------------------ delivery


async def test_publish_delivers_an_equal_envelope(bus: EventBus, token: str) -> None:
    sent = Envelope.new(
        type="com.virtufin.exchange.binance.trade.tick",
        source="urn:com.virtufin.marketdata",
        data={"price": 101.25, "qty": 3, "tags": ["a", "ü"], "nested": {"x": None}},
        subject="BTCUSDT",
        correlationid="c-1",
        clocktype="wall",
        eventtime=datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        marketlane="act",
        extensions={"venueseq": 42, "flag": True},
    )
    inbox = Inbox()
    await bus.subscribe(f"act.exchange.{token}.>", inbox)
    await bus.publish(tick(token), sent)
    await inbox.wait_for(1)
    received, delivery = inbox.events[0]
    assert received == sent
    assert delivery == Delivery(tick(token), 1, None)


async def test_wildcards_route_like_nats_subjects(bus: EventBus, token: str) -> None:
    star, tail, leading = Inbox(), Inbox(), Inbox()
    await bus.subscribe(f"act.exchange.{token}.*.tick", star)
    await bus.subscribe(f"act.exchange.{token}.>", tail)
    await bus.subscribe(f"*.exchange.{token}.trade.tick", leading)
    published = [
        tick(token, "trade", "tick"),
        tick(token, "book", "tick"),
        tick(token, "trade", "tick", "BTCUSDT"),
        tick(token, "trade", "quote"),
        tick(token + "x", "trade", "tick"),  # another venue: nobody here listens
    ]
    for n, topic in enumerate(published):
        await bus.publish(topic, event(n))
    await tail.wait_for(4)
    await star.wait_for(2)
    await leading.wait_for(1)
    await asyncio.sleep(SETTLE)
    assert sorted(star.topics) == sorted(published[:2])
    assert sorted(tail.topics) == sorted(published[:4])
    assert leading.topics == published[:1]


async def test_two_plain_subscribers_each_get_every_event(bus: EventBus, token: str) -> None:
    first, second = Inbox(), Inbox()
    await bus.subscribe(f"act.exchange.{token}.>", first)
    await bus.subscribe(f"act.exchange.{token}.>", second)
    sent = [event(n) for n in range(5)]
    for ev in sent:
        await bus.publish(tick(token), ev)
    await first.wait_for(5)
    await second.wait_for(5)
    await asyncio.sleep(SETTLE)
    assert first.ids == [ev.id for ev in sent]
    assert second.ids == [ev.id for ev in sent]


async def test_group_members_compete_and_each_event_is_handled_once(
    bus: EventBus, token: str
) -> None:
    one, two, bystander = Inbox(), Inbox(), Inbox()
    pattern = f"sc.LIVE.trading.{token}.>"
    await bus.subscribe(pattern, one, group="workers")
    await bus.subscribe(pattern, two, group="workers")
    await bus.subscribe(pattern, bystander)
    sent = [event(n) for n in range(30)]
    for ev in sent:
        await bus.publish(f"sc.LIVE.trading.{token}.submitted", ev)
    await bystander.wait_for(30)
    await eventually(lambda: len(one.events) + len(two.events) >= 30, "30 group deliveries")
    await asyncio.sleep(SETTLE)
    handled = one.ids + two.ids
    assert sorted(handled) == sorted(ev.id for ev in sent)
    assert {d.group for _, d in one.events + two.events} == {"workers"}
    assert bystander.ids == [ev.id for ev in sent]


async def test_ordered_group_is_one_at_a_time_in_order(bus: EventBus, token: str) -> None:
    """An ordered group: each event's handling ends before the next starts, in publish order,
    even with two members competing."""
    running: list[str] = []
    overlaps: list[str] = []
    order: list[int] = []

    async def handler(envelope: Envelope, delivery: Delivery) -> None:
        if running:
            overlaps.append(envelope.id)
        running.append(envelope.id)
        await asyncio.sleep(0.002)
        order.append(envelope.data["n"])
        running.remove(envelope.id)

    pattern = f"sc.LIVE.trading.{token}.>"
    await bus.subscribe(pattern, handler, group="stateful", ordered=True)
    await bus.subscribe(pattern, handler, group="stateful", ordered=True)
    for n in range(20):
        await bus.publish(f"sc.LIVE.trading.{token}.submitted", event(n))
    await eventually(lambda: len(order) >= 20, "20 ordered deliveries")
    await asyncio.sleep(SETTLE)
    assert order == list(range(20))
    assert overlaps == []


async def test_ordered_group_retries_a_failure_before_anything_newer(
    bus: EventBus, token: str
) -> None:
    flaky = Inbox(fail=lambda env, d: env.data["n"] == 1 and d.attempt < 3)
    topic = f"sc.LIVE.trading.{token}.submitted"
    await bus.subscribe(topic, flaky, group="stateful", max_deliveries=5, ordered=True)
    for n in range(5):
        await bus.publish(topic, event(n))
    await flaky.wait_for(7)
    await asyncio.sleep(SETTLE)
    calls = [(env.data["n"], d.attempt) for env, d in flaky.events]
    assert calls == [(0, 1), (1, 1), (1, 2), (1, 3), (2, 1), (3, 1), (4, 1)]


# ------------------------------------------------------------------ failures


async def test_failing_handler_is_redelivered_then_dead_lettered(bus: EventBus, token: str) -> None:
    dead = Inbox()
    await bus.subscribe(topics.DEAD_LETTER, dead)
    failing = Inbox(fail=lambda env, d: True)
    topic = f"sc.LIVE.trading.{token}.submitted"
    await bus.subscribe(topic, failing, max_deliveries=3, group="g")
    sent = event()
    await bus.publish(topic, sent)
    await failing.wait_for(3)
    await eventually(lambda: sent.id in dead.ids, "the dead letter")
    await asyncio.sleep(SETTLE)
    assert [d.attempt for _, d in failing.events] == [1, 2, 3]
    letters = [env for env, _ in dead.events if env.id == sent.id]
    assert len(letters) == 1
    letter = letters[0]
    assert letter.data == sent.data
    assert letter.type == sent.type
    assert letter.extensions["dltopic"] == topic
    assert letter.extensions["dlreason"] == f"ValueError: refusing {sent.id} on attempt 3"
    assert letter.extensions["dlattempts"] == 3
    assert letter.extensions["dlgroup"] == "g"


async def test_each_group_that_gives_up_on_an_event_dead_letters_it(
    bus: EventBus, token: str
) -> None:
    """Dead letters share their event's (source, id): de-duplication must not merge the
    letters of two groups, nor drop the letter of an event the subscriber already handled."""
    dead = Inbox()
    await bus.subscribe(topics.DEAD_LETTER, dead)
    topic = f"sc.LIVE.trading.{token}.submitted"
    await bus.subscribe(topic, Inbox(fail=lambda env, d: True), max_deliveries=1, group="g1")
    await bus.subscribe(topic, Inbox(fail=lambda env, d: True), max_deliveries=1, group="g2")
    sent = event()
    await bus.publish(topic, sent)
    await eventually(lambda: dead.ids.count(sent.id) >= 2, "a dead letter per group")
    await asyncio.sleep(SETTLE)
    letters = [env for env, _ in dead.events if env.id == sent.id]
    assert sorted(env.extensions["dlgroup"] for env in letters) == ["g1", "g2"]


async def test_a_handler_that_recovers_is_not_dead_lettered(bus: EventBus, token: str) -> None:
    dead = Inbox()
    await bus.subscribe(topics.DEAD_LETTER, dead)
    flaky = Inbox(fail=lambda env, d: d.attempt == 1)
    await bus.subscribe(tick(token), flaky, max_deliveries=3)
    sent = event()
    await bus.publish(tick(token), sent)
    await flaky.wait_for(2)
    await asyncio.sleep(SETTLE)
    assert [(env.id, d.attempt) for env, d in flaky.events] == [(sent.id, 1), (sent.id, 2)]
    assert sent.id not in dead.ids


async def test_duplicates_by_source_and_id_are_delivered_once(bus: EventBus, token: str) -> None:
    inbox = Inbox()
    await bus.subscribe(tick(token), inbox)
    original = event(1)
    same_id_other_source = original.with_changes(source="urn:com.virtufin.other")
    await bus.publish(tick(token), original)
    await bus.publish(tick(token), original)
    await bus.publish(tick(token), original.with_changes(data={"n": 2}))  # a retry, same id
    await bus.publish(tick(token), same_id_other_source)
    await inbox.wait_for(2)
    await asyncio.sleep(SETTLE)
    assert [(env.source, env.id) for env, _ in inbox.events] == [
        (original.source, original.id),
        (same_id_other_source.source, original.id),
    ]


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "topic",
    [
        "act.EQ_2008.exchange.binance.trade.tick",
        "hyp.exchange.binance.trade.tick",
        "sc.NOT_REGISTERED.trading.order.submitted",
        "sc.live.trading.order.submitted",
        "nonsense",
    ],
)
async def test_lane_validation_rejects_before_publishing(
    factory: BusFactory, request: pytest.FixtureRequest, topic: str
) -> None:
    registry = ScenarioRegistry(MemoryStateStore())
    await registry.seed_live()
    async with factory(request, LaneValidator(registry)) as bus:
        with pytest.raises(PublishRejectedError) as info:
            await bus.publish(topic, event())
    assert info.value.topic == topic


async def test_registered_active_scenario_publishes(
    factory: BusFactory, request: pytest.FixtureRequest, token: str
) -> None:
    registry = ScenarioRegistry(MemoryStateStore())
    sid = token.upper()
    await registry.register(Scenario.backtest(sid, selector="EQ_2008"))
    async with factory(request, LaneValidator(registry)) as bus:
        inbox = Inbox()
        topic = f"sc.{sid}.trading.order.submitted"
        await bus.subscribe(topic, inbox)
        with pytest.raises(PublishRejectedError, match="scenarioid"):
            await bus.publish(topic, event(scenarioid="OTHER"))
        await bus.publish(topic, event(scenarioid=sid))
        await inbox.wait_for(1)
        assert inbox.events[0][0].scenarioid == sid


# ------------------------------------------------------------------ unsubscribe


async def test_a_group_member_that_leaves_hands_its_events_to_the_others(
    bus: EventBus, token: str
) -> None:
    """Events a member had taken but not handled when it unsubscribed go to the rest of
    its group (at least once per group), not away with the member."""
    leaving, staying = Inbox(), Inbox()
    pattern = f"sc.LIVE.trading.{token}.>"
    gone = await bus.subscribe(pattern, leaving, group="workers")
    await bus.subscribe(pattern, staying, group="workers")
    sent = [event(n) for n in range(6)]
    for ev in sent:
        await bus.publish(f"sc.LIVE.trading.{token}.submitted", ev)
    await gone.unsubscribe()
    want = {ev.id for ev in sent}
    await eventually(
        lambda: want <= set(leaving.ids) | set(staying.ids), "every event handled", within=15
    )


async def test_unsubscribe_from_its_own_handler_stops_delivery(bus: EventBus, token: str) -> None:
    inbox = Inbox()
    subscription = None

    async def handler(envelope: Envelope, delivery: Delivery) -> None:
        await inbox(envelope, delivery)
        assert subscription is not None
        await subscription.unsubscribe()

    subscription = await bus.subscribe(tick(token), handler)
    sent = [event(n) for n in range(3)]
    for ev in sent:
        await bus.publish(tick(token), ev)
    await inbox.wait_for(1)
    await asyncio.sleep(SETTLE)
    assert inbox.ids == [sent[0].id]


async def test_unsubscribe_stops_delivery(bus: EventBus, token: str) -> None:
    inbox = Inbox()
    subscription = await bus.subscribe(tick(token), inbox)
    first = event(1)
    await bus.publish(tick(token), first)
    await inbox.wait_for(1)
    await subscription.unsubscribe()
    await subscription.unsubscribe()  # idempotent
    await bus.publish(tick(token), event(2))
    await asyncio.sleep(SETTLE)
    assert inbox.ids == [first.id]
