"""The live paper venue in one process (in-process bus, memory/SQLite state).

- bars replayed onto ``act`` lanes through the SMA-crossover worker (hosted by the runtime's
  `Supervisor`, as the WorkManager hosts it) give exactly the backtest's fills: one code path;
- the same order delivered twice is filled once; a new request reusing an order id is
  rejected; a restart (a fresh venue on the same state) keeps positions and pending orders
  and never fills an order twice;
- risk limits reject with the reason and publish ``risk.limit.breach``;
- the last-price rule fills at once; ``order.accepted`` is consumed when configured;
- a replay order decided on a past bar fills on the bar after its decision (market history),
  one decided on a bar not seen yet waits for it.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from harness.bars import candle
from livekit import eventually, write_daily_bars, zigzag

from services.execution.executor import PaperExecution
from services.execution.paper import SOURCE, PaperSettings
from services.execution.risk import RiskLimits
from virtufin import statekeys, topics
from virtufin.backtest import BacktestConfig, HiveDataset, run_backtest
from virtufin.bus.memory import MemoryBus
from virtufin.bus.port import Delivery
from virtufin.bus.validation import LaneValidator
from virtufin.envelope import Envelope
from virtufin.errors import BusError
from virtufin.marketdata.connectors import ReplayManager, ReplayStatus
from virtufin.runtime.manifest import WorkerManifest
from virtufin.runtime.supervisor import Supervisor
from virtufin.scenarios import ScenarioRegistry
from virtufin.state.sqlite import SqliteStateStore
from virtufin.topics import EventTypes

SELECTOR = "PAPER"
SYMBOL = "BTCUSDT"
PARAMS = {"fast": 3, "slow": 8}
#: Down 12, up 8, down 8, up 8, down 6: four crossovers for SMA(3)/SMA(8).
CLOSES = zigzag((12, -1.0), (8, 1.5), (8, -1.3), (8, 1.2), (6, -1.1))


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Envelope]] = []

    async def __call__(self, envelope: Envelope, delivery: Delivery) -> None:
        self.events.append((delivery.topic, envelope))

    def of(self, kind: str) -> list[Envelope]:
        return [e for t, e in self.events if e.type == EventTypes.order(kind)]

    def topics(self, prefix: str) -> list[str]:
        return [t for t, _ in self.events if t.startswith(prefix)]


def _bar(close: float, day: int) -> Envelope:
    return candle(
        "replay", SYMBOL, close, datetime(2024, 1, day, tzinfo=UTC), source="urn:com.virtufin.test"
    )


def _order(order_id: str, side: str = "buy", *, qty: float | None = 2.0, **extra: Any) -> Envelope:
    return Envelope.new(
        type=EventTypes.order("submitted"),
        source="urn:com.virtufin.worker.test",
        data={
            "order_id": order_id,
            "symbol": SYMBOL,
            "side": side,
            "type": "market",
            "qty": qty,
            "limit_price": None,
            "sizing": "units" if qty is not None else "all_in",
            "exclusive": False,
            "reason": "test",
            **extra,
        },
        scenarioid="LIVE",
    )


BAR_TOPIC = topics.bar("replay", SYMBOL, interval="1d")


async def _tick(bus: MemoryBus, execution: PaperExecution, close: float, day: int) -> None:
    """Publish a bar and wait until the venue handled it (orders and bars are separate
    consumers, so an order published next could otherwise overtake it)."""
    seen = execution.stats.ticks
    await bus.publish(BAR_TOPIC, _bar(close, day))
    await eventually(lambda: execution.stats.ticks > seen, f"bar {day}")


ORDER_TOPIC = topics.order_event("LIVE", "submitted")


async def _venue(
    bus: MemoryBus, store: SqliteStateStore, **settings: Any
) -> tuple[PaperExecution, Recorder]:
    registry = ScenarioRegistry(store)
    await registry.seed_live()
    execution = PaperExecution(
        bus=bus, store=store, registry=registry, settings=PaperSettings(**settings)
    )
    await execution.start()
    recorder = Recorder()
    await bus.subscribe("sc.LIVE.>", recorder)
    return execution, recorder


async def test_replayed_bars_through_the_worker_fill_exactly_as_the_backtest(
    tmp_path: Path,
) -> None:
    write_daily_bars(tmp_path / "data", SELECTOR, SYMBOL, CLOSES, first=date(2024, 1, 1))
    expected = run_backtest(
        "sma_cross",
        HiveDataset(tmp_path / "data", SELECTOR),
        params=PARAMS,
        config=BacktestConfig(venue="paper"),
    )
    # Order ids derive from the worker id and the bar events, which differ between the backtest
    # and the replay: fills are compared by (venue-made closing order?, side, qty, price).
    expected_fills = sorted(
        (o.order_id.endswith("-close"), o.side, o.filled_qty, o.avg_price)
        for o in expected.orders
        if o.status == "filled"
    )
    assert len(expected_fills) == 7  # a buy, then close + reverse on three more crossovers

    bus = MemoryBus()
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    execution, recorder = await _venue(bus, store)
    supervisor = Supervisor(bus)
    manifest = WorkerManifest.load(Path("workers/sma_cross/manifest.json")).model_copy(
        update={"id": "w"}
    )
    await supervisor.create(
        manifest,
        params=PARAMS,
        topics=(f"act.exchange.replay.ohlcv.candle.1d.{SYMBOL}",),
        scenario_id="LIVE",
    )
    await supervisor.start("w")
    replays = ReplayManager(publish=bus.publish)
    replay = replays.start(tmp_path / "data", SELECTOR, speed=0)
    assert await replays.wait(replay.id) is ReplayStatus.FINISHED
    assert replay.events_published == len(CLOSES)

    def fills() -> list[tuple[bool, str, float, float]]:
        return sorted(
            (
                e.data["order_id"].endswith("-close"),
                e.data["side"],
                e.data["qty_filled"],
                e.data["price"],
            )
            for e in recorder.of("filled")
        )

    await eventually(lambda: len(fills()) >= len(expected_fills), "the fills")
    await asyncio.sleep(0.1)
    assert fills() == expected_fills
    for topic, envelope in recorder.events:
        if envelope.source != SOURCE:
            continue
        assert envelope.scenarioid == "LIVE"
        assert envelope.clocktype == "wall"
        assert (envelope.marketlane, envelope.portfoliolane, envelope.strategylane) == (
            "act",
            "act",
            "act",
        )
        assert topic.startswith(("sc.LIVE.trading.", "sc.LIVE.position.", "sc.LIVE.pnl."))
    fill = recorder.of("filled")[0].data
    assert set(fill) >= {
        "fill_id",
        "qty_filled",
        "price",
        "fee",
        "liquidity",
        "remaining_qty",
        "filled_at",
        "realized_pnl",
    }
    assert recorder.topics("sc.LIVE.position.BTCUSDT.")
    assert recorder.topics("sc.LIVE.pnl.realized.update")

    # State: every order filled (once), and the position as the backtest ends.
    filled_ids = [e.data["order_id"] for e in recorder.of("filled")]
    assert len(set(filled_ids)) == len(filled_ids)
    for order_id in filled_ids:
        stored = await store.get(statekeys.order("LIVE", order_id))
        assert stored is not None
        assert stored.value["status"] == "filled"
    position = await store.get(statekeys.position("LIVE", SYMBOL))
    assert position is not None
    units = sum(
        o.filled_qty * (1 if o.side == "buy" else -1)
        for o in expected.orders
        if o.status == "filled"
    )
    assert position.value["size"] == pytest.approx(units)
    await supervisor.close()
    await execution.close()
    await store.close()


async def test_redelivery_restart_and_reused_ids_never_fill_twice(tmp_path: Path) -> None:
    bus = MemoryBus()
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    execution, recorder = await _venue(bus, store)
    await _tick(bus, execution, 100.0, 1)
    order = _order("o-1")
    await bus.publish(ORDER_TOPIC, order)
    await eventually(lambda: recorder.of("accepted"), "accepted")
    # Delivered again (a broker redelivery carries the same event): no second answer.
    await execution.on_order(order, Delivery(ORDER_TOPIC))
    assert execution.stats.duplicates == 1
    await execution.close()

    # Restart: a fresh venue on the same state still holds o-1 pending, fills it on the
    # next bar, once.
    bus2 = MemoryBus()
    again, recorder2 = await _venue(bus2, store)
    assert [o.order_id for q in again.books["LIVE"].venue.pending.values() for o in q] == ["o-1"]
    await _tick(bus2, again, 101.0, 2)
    await eventually(lambda: recorder2.of("filled"), "the fill after the restart")
    assert [e.data["price"] for e in recorder2.of("filled")] == [101.0]  # next bar's open
    await again.on_order(order, Delivery(ORDER_TOPIC))  # the old request again
    reused = _order("o-1", "sell")  # a new request with a known id
    await bus2.publish(ORDER_TOPIC, reused)
    await eventually(lambda: recorder2.of("rejected"), "the rejection")
    assert recorder2.of("rejected")[0].data["reason"] == "duplicate order id 'o-1'"
    await _tick(bus2, again, 102.0, 3)
    await asyncio.sleep(0.1)
    assert len(recorder2.of("filled")) == 1
    position = await store.get(statekeys.position("LIVE", SYMBOL))
    assert position is not None
    assert position.value["size"] == 2.0
    await again.close()
    await store.close()


async def test_risk_limits_reject_with_the_reason(tmp_path: Path) -> None:
    bus = MemoryBus()
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    execution, recorder = await _venue(bus, store)
    await execution.set_limits(RiskLimits("LIVE", max_notional=150.0, max_position=3.0))
    await _tick(bus, execution, 100.0, 1)
    await bus.publish(ORDER_TOPIC, _order("big", qty=2.0))  # 200 > 150
    await bus.publish(ORDER_TOPIC, _order("ok", qty=1.0))
    await eventually(lambda: recorder.of("rejected") and recorder.of("accepted"), "answers")
    rejected = recorder.of("rejected")[0].data
    assert rejected["order_id"] == "big"
    assert rejected["reason"] == "notional 200.00 exceeds max_notional 150.00"
    breach = [e for t, e in recorder.events if t == "sc.LIVE.risk.limit.breach"]
    assert breach[0].data["limit"] == "max_notional"
    stored = await store.get(statekeys.order("LIVE", "big"))
    assert stored is not None
    assert (stored.value["status"], stored.value["reject_reason"]) == (
        "rejected",
        "notional 200.00 exceeds max_notional 150.00",
    )
    await execution.set_limits(RiskLimits("LIVE", max_notional=0.0, max_position=3.0))
    await _tick(bus, execution, 100.0, 2)  # fills "ok": position 1
    await bus.publish(ORDER_TOPIC, _order("too-long", qty=2.5))  # 1 + 2.5 > 3
    await eventually(lambda: len(recorder.of("rejected")) == 2, "the position breach")
    assert recorder.of("rejected")[1].data["reason"] == "position 3.5 would exceed max_position 3"
    assert (await execution.get_limits("LIVE")).max_position == 3.0
    await execution.close()
    await store.close()


async def test_last_price_rule_and_consuming_accepted_orders(tmp_path: Path) -> None:
    bus = MemoryBus(validator=LaneValidator())
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    execution, recorder = await _venue(bus, store, fill="close", consume="accepted")
    await _tick(bus, execution, 100.0, 1)
    submitted = _order("r-1", qty=1.0)
    await bus.publish(ORDER_TOPIC, submitted)  # not for the venue: a risk filter answers it
    await asyncio.sleep(0.05)
    assert recorder.of("filled") == []
    accepted = submitted.with_changes(
        id=str(uuid.uuid4()), type=EventTypes.order("accepted"), source="urn:com.virtufin.risk"
    )
    await bus.publish(topics.order_event("LIVE", "accepted"), accepted)
    await eventually(lambda: recorder.of("filled"), "the fill at the last price")
    assert recorder.of("filled")[0].data["price"] == 100.0
    own_accepted = [e for e in recorder.of("accepted") if e.source == SOURCE]
    assert own_accepted == []  # the risk filter's acceptance is the only one
    await execution.close()
    await store.close()


async def test_a_late_replay_order_fills_on_the_bar_after_its_decision(tmp_path: Path) -> None:
    bus = MemoryBus()
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    execution, recorder = await _venue(bus, store)
    for day, close in enumerate((100.0, 101.0, 102.0, 103.0, 104.0), start=1):
        await _tick(bus, execution, close, day)
    decided = datetime(2024, 1, 2, tzinfo=UTC)  # on the close of bar 2; the market is at bar 5
    late = _order("late", qty=1.0).with_changes(clocktype="historical", eventtime=decided)
    await bus.publish(ORDER_TOPIC, late)
    await eventually(lambda: recorder.of("filled"), "the late fill")
    assert recorder.of("filled")[0].data["price"] == 102.0  # bar 3's open, as in a backtest
    assert execution.stats.late == 1
    ahead = _order("ahead", qty=1.0).with_changes(
        clocktype="historical", eventtime=datetime(2024, 1, 6, tzinfo=UTC)
    )
    await bus.publish(ORDER_TOPIC, ahead)  # decided on a bar the venue has not seen yet
    await eventually(lambda: execution.stats.held == 1, "the held order")
    await _tick(bus, execution, 105.0, 6)  # its decision bar: accepted now …
    await _tick(bus, execution, 106.0, 7)  # … and filled at the next bar's open
    await eventually(lambda: len(recorder.of("filled")) == 2, "the held order's fill")
    assert recorder.of("filled")[1].data["price"] == 106.0
    position = await store.get(statekeys.position("LIVE", SYMBOL))
    assert position is not None
    assert position.value["size"] == 2.0
    await execution.close()
    await store.close()


OTHER = "ETHUSDT"


async def _other_tick(bus: MemoryBus, execution: PaperExecution, close: float, day: int) -> None:
    """A bar of another symbol (nothing waits on it: the venue only notes its price)."""
    seen = execution.stats.ticks
    bar = _bar(close, day).with_changes(data={**_bar(close, day).data, "symbol": OTHER})
    await bus.publish(topics.bar("replay", OTHER, interval="1d"), bar)
    await eventually(lambda: execution.stats.ticks > seen, f"{OTHER} bar {day}")


@pytest.mark.parametrize("fill", ["next-open", "close"])
async def test_fills_among_other_symbols_bars(tmp_path: Path, fill: str) -> None:
    """Bars of a symbol nothing waits on take the venue's cheap path (their one-row bar is
    never built); orders still fill on their own symbol's bars: the next one's open
    (``next-open``) or its last close (``close``), whatever other bars came between."""
    bus = MemoryBus()
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    execution, recorder = await _venue(bus, store, fill=fill)
    await _tick(bus, execution, 100.0, 1)
    await _other_tick(bus, execution, 5001.0, 1)
    await bus.publish(ORDER_TOPIC, _order("among-1", qty=1.0))
    if fill == "next-open":
        await eventually(lambda: recorder.of("accepted"), "the accepted order")
        await _other_tick(bus, execution, 5002.0, 2)
        await asyncio.sleep(0.05)
        assert recorder.of("filled") == []  # another symbol's bar fills nothing
    await _tick(bus, execution, 110.0, 2)  # next-open: its own next bar's open (110)
    await eventually(lambda: recorder.of("filled"), "the fill")
    assert recorder.of("filled")[0].data["price"] == (110.0 if fill == "next-open" else 100.0)
    await _other_tick(bus, execution, 5003.0, 3)
    await bus.publish(ORDER_TOPIC, _order("among-2", "sell", qty=1.0))
    if fill == "next-open":
        await eventually(lambda: len(recorder.of("accepted")) == 2, "the second accepted")
        await _tick(bus, execution, 120.0, 4)
    await eventually(lambda: len(recorder.of("filled")) == 2, "the second fill")
    assert recorder.of("filled")[1].data["price"] == (120.0 if fill == "next-open" else 110.0)
    book = execution.books["LIVE"]
    assert book.portfolio.units.get(SYMBOL, 0.0) == 0.0
    assert book.market.price(OTHER) == 5003.0
    await execution.close()
    await store.close()


class _FlakyBus(MemoryBus):
    """A memory bus whose next `failures` batch publishes on ``sc.`` lanes fail (a broker
    timeout): the handler raises and the input is delivered again."""

    failures = 0

    async def publish_many(self, items: Any) -> None:
        items = list(items)
        if self.failures and any(t.startswith("sc.") for t, _ in items):
            self.failures -= 1
            raise BusError(items[0][0], "no acknowledgement (test)")
        await super().publish_many(items)


@pytest.mark.parametrize("fill", ["next-open", "close"])
async def test_a_failed_publish_neither_doubles_nor_loses_a_fill(tmp_path: Path, fill: str) -> None:
    """An order or bar whose answers could not be published is handled again (redelivered);
    the venue must not have kept what it decided the first time: one fill, one position."""
    bus = _FlakyBus()
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    execution, recorder = await _venue(bus, store, fill=fill)
    await _tick(bus, execution, 100.0, 1)
    bus.failures = 1
    await bus.publish(ORDER_TOPIC, _order("flaky-1", qty=1.0))  # its answers fail once
    await eventually(lambda: recorder.of("accepted"), "the accepted order")
    if fill == "next-open":
        bus.failures = 1
        await bus.publish(BAR_TOPIC, _bar(110.0, 2))  # its fill fails once
    await eventually(lambda: recorder.of("filled"), "the fill")
    await asyncio.sleep(0.1)
    assert len(recorder.of("filled")) == 1
    assert execution.books["LIVE"].portfolio.units.get(SYMBOL) == 1.0
    position = await store.get(statekeys.position("LIVE", SYMBOL))
    assert position is not None
    assert position.value["size"] == 1.0
    await execution.close()
    await store.close()


async def _created_at(store: SqliteStateStore, order_id: str) -> str:
    """The stored record's ``created_at`` of a LIVE order."""
    stored = await store.get(statekeys.order("LIVE", order_id))
    assert stored is not None
    return str(stored.value["created_at"])


async def _filled_since(store: SqliteStateStore, order_id: str, created_at: str) -> None:
    """The order is stored as filled, with the ``created_at`` it had before."""
    stored = await store.get(statekeys.order("LIVE", order_id))
    assert stored is not None
    assert stored.value["status"] == "filled"
    assert stored.value["created_at"] == created_at


async def test_a_restart_keeps_a_pending_orders_created_at(tmp_path: Path) -> None:
    """The stored order's ``created_at`` is when it was accepted, not when a restarted venue
    (which rebuilds the book from state) filled it."""
    bus = MemoryBus()
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    execution, recorder = await _venue(bus, store)
    await _tick(bus, execution, 100.0, 1)
    await bus.publish(ORDER_TOPIC, _order("kept-1", qty=1.0))
    await eventually(lambda: recorder.of("accepted"), "accepted")
    before = await _created_at(store, "kept-1")
    await execution.close()
    await asyncio.sleep(0.01)

    bus2 = MemoryBus()
    again, recorder2 = await _venue(bus2, store)
    await _tick(bus2, again, 101.0, 2)
    await eventually(lambda: recorder2.of("filled"), "the fill after the restart")
    await _filled_since(store, "kept-1", before)
    await again.close()
    await store.close()


def _ahead(order_id: str, day: int) -> Envelope:
    """A replay order decided on bar `day`, which the venue has not seen yet (it is held)."""
    decided = datetime(2024, 1, day, tzinfo=UTC)
    return _order(order_id, qty=1.0).with_changes(clocktype="historical", eventtime=decided)


async def test_a_held_orders_created_at_is_when_it_was_held(tmp_path: Path) -> None:
    """Releasing a held order (its bar came) does not move its stored ``created_at``."""
    bus = MemoryBus()
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    execution, recorder = await _venue(bus, store)
    await _tick(bus, execution, 100.0, 1)
    await bus.publish(ORDER_TOPIC, _ahead("held-1", 2))
    await eventually(lambda: execution.stats.held == 1, "the held order")
    before = await _created_at(store, "held-1")
    await asyncio.sleep(0.01)
    await _tick(bus, execution, 101.0, 2)  # its bar: released to the venue
    await eventually(lambda: recorder.of("accepted"), "accepted")
    await _tick(bus, execution, 102.0, 3)
    await eventually(lambda: recorder.of("filled"), "the fill")
    await _filled_since(store, "held-1", before)
    await execution.close()
    await store.close()


async def test_a_restart_keeps_a_held_orders_created_at(tmp_path: Path) -> None:
    """A held order restored from the book after a restart keeps its ``created_at``."""
    bus = MemoryBus()
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    execution, _ = await _venue(bus, store)
    await _tick(bus, execution, 100.0, 1)
    await bus.publish(ORDER_TOPIC, _ahead("held-2", 2))
    await eventually(lambda: execution.stats.held == 1, "the held order")
    before = await _created_at(store, "held-2")
    await execution.close()
    await asyncio.sleep(0.01)

    bus2 = MemoryBus()
    again, recorder2 = await _venue(bus2, store)
    await again.book("LIVE")  # restored from state, with its held order
    await _tick(bus2, again, 101.0, 2)
    await _tick(bus2, again, 102.0, 3)
    await eventually(lambda: recorder2.of("filled"), "the fill after the restart")
    await _filled_since(store, "held-2", before)
    await again.close()
    await store.close()
