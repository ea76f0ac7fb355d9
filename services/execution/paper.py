"""The live paper venue: the backtest's `SimulatedVenue` and `Portfolio`, driven by live lanes.

Backtest and live share one code path (nautilus_trader style): the order lifecycle, the fill
rules, the sizing, the fees and the position/PnL bookkeeping are the backtest's own classes
(`virtufin.backtest.venue.SimulatedVenue`, `virtufin.backtest.portfolio.Portfolio`), each
scenario getting one pair on a private in-process bus. Only three things differ:

- **the clock**: events carry the wall clock (``clocktype=wall``) and the scenario's lanes
  (`LiveEmitter`), with ids derived from the input they answer, so that re-processing an
  input after a crash yields the same ids and the broker drops the duplicates;
- **the fill trigger**: the latest bar or trade per symbol from ``act.exchange.>`` moves the
  shared `LiveMarket` cursor; with ``fill="next-open"`` a market order fills at the open of
  the symbol's next bar (or the price of its next trade), with ``fill="close"`` at the last
  price at once. Orders of a historical-clock replay are executed on the bars that followed
  their decision, as in the backtest: one decided on a bar this venue has not seen yet is held
  until that bar arrives; one decided on a past bar (its strategy lags, e.g. catching up after
  a restart) is run against the kept market history (`LiveMarket.rewind`). So a replay fills
  identically whatever the consumers' lag;
- **the lanes**: orders come from ``sc.<sid>.trading.order.submitted`` (``accepted`` when a
  risk filter is deployed), answers go to ``sc.<sid>.trading.order.<accepted|filled|rejected|
  cancelled>``, ``sc.<sid>.position.<symbol>.<event>``, ``sc.<sid>.pnl.<metric>.update``,
  ``sc.<sid>.trading.trade.closed`` and ``sc.<sid>.risk.limit.breach`` on the real bus.

Idempotency (an order id is filled at most once, even across restarts): every input is
handled under one lock as *decide → publish → persist → ack*. The order's state key
(``statekeys.order``) is checked before an order is accepted: the same request again (same
CloudEvent source and id: a redelivery) is dropped, a new request reusing a known order id is
rejected with ``duplicate order id``. Before a fill is published its order's stored status is
checked again. Outputs are published before state is written, with deterministic ids: a crash
between the two re-handles the input after the restart from the last persisted book and
re-publishes the same ids, which the broker's de-duplication window drops. The book (cash,
units, lots, pending and held orders, last prices) is persisted in the portfolio key after
every change and restored at start-up.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa

from services.execution.risk import RiskLimits, risk_check
from virtufin import statekeys, topics
from virtufin.backtest.config import BacktestConfig, FillRule
from virtufin.backtest.data import BAR_SCHEMA, parse_interval
from virtufin.backtest.emit import Emitter
from virtufin.backtest.equity import EquityBook
from virtufin.backtest.market import MarketView
from virtufin.backtest.portfolio import Portfolio, _Lot
from virtufin.backtest.replay import BarBatch, SymbolTable
from virtufin.backtest.venue import Order, SimulatedVenue
from virtufin.bus.memory import MemoryBus
from virtufin.bus.port import Delivery
from virtufin.bus.validation import LaneValidator
from virtufin.envelope import (
    SPECVERSION,
    Envelope,
    EnvelopeDraft,
    format_time,
    from_dict,
    parse_time,
    seal,
    to_dict,
    uuid5_text,
)
from virtufin.errors import EnvelopeError, TopicError
from virtufin.lanes import Family, parse
from virtufin.scenarios import Scenario
from virtufin.state.port import StateOp, StateStore
from virtufin.topics import EventTypes

__all__ = [
    "SOURCE",
    "Consume",
    "LiveEmitter",
    "LiveMarket",
    "MarketTick",
    "PaperBook",
    "PaperSettings",
    "Published",
    "market_tick",
    "micros",
]

log = logging.getLogger(__name__)

SOURCE: Final = topics.source_urn("execution")
_NAMESPACE: Final = uuid.UUID("6c3f1f0e-8a55-4d0e-9a0f-5e0c9b7c2a11")
_NAMESPACE_BYTES: Final = _NAMESPACE.bytes
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_US: Final = timedelta(microseconds=1)
_EMPTY_RECORD: Final = pa.RecordBatch.from_pylist([], schema=BAR_SCHEMA)
_TRADE_INTERVAL: Final = "1s"
_BOOK_VERSION: Final = 1
_FINAL: Final = frozenset({"filled", "rejected", "cancelled"})

Consume = Literal["submitted", "accepted"]
Published = list[tuple[str, Envelope]]


def micros(value: datetime) -> int:
    return (value - _EPOCH) // _US


@dataclass(frozen=True, slots=True)
class PaperSettings:
    """How the paper venue fills (env: ``VIRTUFIN_EXECUTION_*``, see the package docs)."""

    fill: FillRule = "next-open"
    consume: Consume = "submitted"
    venue: str = "paper"
    cash: float = 10_000.0
    commission_rate: float = 0.0
    slippage_rate: float = 0.0
    hold_seconds: float = 10.0
    pnl_interval_seconds: float = 1.0

    def __post_init__(self) -> None:
        for name in ("cash", "hold_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive ({getattr(self, name)})")
        self.backtest_config()  # the backtest's own checks (commission, venue token, …)

    def backtest_config(self) -> BacktestConfig:
        return BacktestConfig(
            cash=self.cash,
            commission_rate=self.commission_rate,
            slippage_rate=self.slippage_rate,
            fill=self.fill,
            venue=self.venue,
        )


# --------------------------------------------------------------------------- market


@dataclass(frozen=True, slots=True)
class MarketTick:
    """One market observation: a closed bar, or a trade (as a one-price bar)."""

    symbol: str
    interval: str
    ts_us: int
    open: float
    high: float
    low: float
    close: float
    volume: float


def _number(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{key} is missing or not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{key} is not finite")
    return number


def market_tick(topic: str, envelope: Envelope) -> MarketTick | None:
    """The tick of an ``act.exchange`` candle or trade event; None for other market data.

    Raises:
        ValueError: a candle or trade whose fields are unusable.
    """
    try:
        parsed = parse(topic)
    except TopicError:
        return None
    path = parsed.path  # exchange, venue, entity, event, qualifiers…
    if parsed.family is not Family.ACT or len(path) < 5:
        return None
    data = envelope.data if isinstance(envelope.data, Mapping) else {}
    entity = path[2:4]
    if entity == ("ohlcv", "candle") and len(path) >= 6:
        close_text = data.get("candle_close_time")
        when = (
            parse_time(close_text, field_name="candle_close_time")
            if isinstance(close_text, str)
            else envelope.eventtime or envelope.time
        )
        if when is None:
            raise ValueError("a candle without a close time")
        return MarketTick(
            symbol=str(data.get("symbol") or path[5]),
            interval=path[4],
            ts_us=micros(when),
            open=_number(data, "open"),
            high=_number(data, "high"),
            low=_number(data, "low"),
            close=_number(data, "close"),
            volume=_number(data, "volume") if data.get("volume") is not None else 0.0,
        )
    if entity == ("trade", "tape"):
        trade_time = data.get("trade_time")
        when = (
            parse_time(trade_time, field_name="trade_time")
            if isinstance(trade_time, str)
            else envelope.eventtime or envelope.time
        )
        if when is None:
            raise ValueError("a trade without a time")
        price = _number(data, "price")
        return MarketTick(
            symbol=str(data.get("symbol") or path[4]),
            interval=_TRADE_INTERVAL,
            ts_us=micros(when),
            open=price,
            high=price,
            low=price,
            close=price,
            volume=_number(data, "qty") if data.get("qty") is not None else 0.0,
        )
    return None


def _one_row(tick: MarketTick, code: int, span: int, bar: int) -> BarBatch:
    """The one-row batch the venue reads for `tick`."""
    return BarBatch(
        record=_EMPTY_RECORD,
        ts=np.array([tick.ts_us], dtype=np.int64),
        start=np.array([tick.ts_us - span], dtype=np.int64),
        open=np.array([tick.open]),
        high=np.array([tick.high]),
        low=np.array([tick.low]),
        close=np.array([tick.close]),
        volume=np.array([tick.volume]),
        sym=np.array([code], dtype=np.int64),
        bar=np.array([bar], dtype=np.int64),
    )


#: The slot `_LiveView.batch` stands in front of.
_BATCH_SLOT: Final = MarketView.__dict__["batch"]


class _LiveView(MarketView):
    """A `MarketView` whose current bar is built when something first reads it.

    Live, most ticks are read by no one (no order waits on their symbol), and building a
    tick's one-row batch costs more than everything else a tick does. `defer` records the
    tick (its close goes straight into the carried closes, as `end` would put it); any read
    of `batch` (the venue's and the portfolio's every read goes through it) builds it first,
    so readers see exactly what an eagerly built cursor would show.
    """

    __slots__ = ("_due",)

    def __init__(self) -> None:
        self._due: tuple[MarketTick, int, int, int] | None = None
        super().__init__()

    @property
    def batch(self) -> BarBatch | None:
        due = self._due
        if due is not None:
            self._due = None
            _BATCH_SLOT.__set__(self, _one_row(*due))
            self.row = 0
        batch: BarBatch | None = _BATCH_SLOT.__get__(self, MarketView)
        return batch

    @batch.setter
    def batch(self, value: BarBatch | None) -> None:
        self._due = None  # an explicit batch (a rewind) supersedes a deferred tick
        _BATCH_SLOT.__set__(self, value)

    def defer(self, tick: MarketTick, code: int, span: int, bar: int) -> None:
        """Make `tick` (symbol `code`, equity row `bar`) current without building it yet."""
        self._due = (tick, code, span, bar)
        self.row = 0
        self._carry[code] = (tick.close, tick.ts_us)

    def end(self) -> None:
        if self._due is None:  # built: carry its close as usual (a deferred one is carried)
            super().end()


class LiveMarket:
    """The replay cursor of the backtest (`MarketView`), moved by live ticks.

    Every tick becomes a one-row `BarBatch` (the venue reads only its numpy columns), so the
    venue's fill logic runs unchanged; it is built only when read (`_LiveView`): a tick no
    order needs costs a few dictionary writes. A symbol keeps the interval of its first tick
    (one symbol code per symbol); a tick not newer than the symbol's last one is stale (a
    duplicate or out of order) and ignored. The last `history_size` ticks per symbol are
    kept, so that an order decided on a past bar (a historical-clock replay read by a lagging
    strategy) can be executed against the bars that followed its decision (`rewind`).
    """

    def __init__(self, venue: str, *, history_size: int = 10_000) -> None:
        self.view = _LiveView()
        # The table's bar topics are the backtest's; live they are never published.
        self.symbols = SymbolTable(venue=venue, selector="ACT")
        self.intervals: dict[str, str] = {}
        self.last_ts: dict[str, int] = {}
        self.last_close: dict[str, float] = {}
        self.history: dict[str, deque[MarketTick]] = {}
        self.current: MarketTick | None = None
        self.current_code: int | None = None
        """Symbol code of the bar the cursor is on (`current`, or a rewound one)."""
        self._spans: dict[str, tuple[int, int]] = {}  # symbol → (code, interval in µs)
        self._history_size = history_size
        self._bars = 0

    def code(self, symbol: str, interval: str) -> int:
        interval = self.intervals.setdefault(symbol, interval)
        return self.symbols.code(symbol, interval)

    def _span(self, tick: MarketTick) -> tuple[int, int]:
        found = self._spans.get(tick.symbol)
        if found is None:
            code = self.code(tick.symbol, tick.interval)
            found = self._spans[tick.symbol] = (code, parse_interval(self.intervals[tick.symbol]))
        return found

    def begin(self, tick: MarketTick) -> bool:
        """Make `tick` the current bar; False (and no change) when it is stale."""
        symbol = tick.symbol
        if tick.ts_us <= self.last_ts.get(symbol, -(2**63)):
            return False
        code, span = self._span(tick)
        self.view.defer(tick, code, span, self._bars)
        self._bars += 1
        self.current_code = code
        self.last_ts[symbol] = tick.ts_us
        self.last_close[symbol] = tick.close
        history = self.history.get(symbol)
        if history is None:
            history = self.history[symbol] = deque(maxlen=self._history_size)
        history.append(tick)
        self.current = tick
        return True

    def forget(self, tick: MarketTick, previous: tuple[int | None, float | None]) -> None:
        """Undo `begin(tick)` (its handling failed) so that its redelivery is not stale;
        `previous` is the symbol's (last ts, last close) before it."""
        symbol = tick.symbol
        if self.last_ts.get(symbol) != tick.ts_us:
            return
        ts_us, close = previous
        if ts_us is None or close is None:
            self.last_ts.pop(symbol, None)
            self.last_close.pop(symbol, None)
        else:
            self.last_ts[symbol], self.last_close[symbol] = ts_us, close
        history = self.history.get(symbol)
        if history and history[-1] is tick:
            history.pop()

    def show(self, tick: MarketTick) -> None:
        """Put the cursor on `tick` (no bookkeeping: `begin` for new ticks, this for rewinds)."""
        code, span = self._span(tick)
        batch = _one_row(tick, code, span, self._bars)
        self._bars += 1
        self.current_code = code
        self.view.begin(batch)
        self.view.row = 0

    def end(self) -> None:
        self.view.end()

    def rewind(self, symbol: str, decided_us: int) -> tuple[MarketTick, list[MarketTick]] | None:
        """The symbol's bar at or before `decided_us` and every later one; None when the
        history does not reach back that far."""
        history = self.history.get(symbol)
        if not history or history[0].ts_us > decided_us:
            return None
        at = None
        later = []
        for tick in history:
            if tick.ts_us <= decided_us:
                at = tick
            else:
                later.append(tick)
        assert at is not None
        return at, later

    def restore(self, symbol: str) -> None:
        """After a rewind: the symbol's latest bar, then the overall latest, are current."""
        history = self.history.get(symbol)
        if history:
            self.show(history[-1])
            self.end()
        if self.current is not None:
            self.show(self.current)
            self.end()

    def seed(self, symbol: str, interval: str, close: float, ts_us: int) -> None:
        """Restore a symbol's last price (after a restart)."""
        tick = MarketTick(symbol, interval, ts_us, close, close, close, close, 0.0)
        if self.begin(tick):
            self.end()

    def price(self, symbol: str) -> float | None:
        return self.last_close.get(symbol)

    @property
    def started(self) -> bool:
        return self._bars > 0


# --------------------------------------------------------------------------- emitting


class LiveEmitter(Emitter):
    """The backtest's `Emitter` with the live clock and lanes and input-derived ids.

    Ids are UUIDv5 of (the input being handled, the output's index): `scope` names the input.
    """

    def __init__(self, *, bus: MemoryBus, market: MarketView, scenario: Scenario, run_id: str):
        super().__init__(
            bus=bus, market=market, scenario_id=scenario.id, run_id=run_id, source=SOURCE
        )
        self.lanes = (
            scenario.market.lane.value,
            scenario.market.selector,
            scenario.portfolio.lane.value,
            scenario.strategy.lane.value,
        )
        self.key = "init"
        self.count = 0

    def scope(self, key: str) -> None:
        """Name the input whose outputs follow (their ids derive from it)."""
        self.key = key
        self.count = 0

    def emit(
        self,
        topic: str,
        type: str,
        data: dict[str, Any],
        *,
        at_us: int | None = None,
        correlationid: str | None = None,
    ) -> Envelope:
        now = datetime.now(UTC)
        self.count += 1
        market, selector, portfolio, strategy = self.lanes
        # The constructor's fields, assembled without its per-field frozen setattr (the venue's
        # answers to an order are on the order → fill latency path).
        draft = object.__new__(EnvelopeDraft)
        draft.id = uuid5_text(_NAMESPACE_BYTES, f"{self.scenario_id}|{self.key}|{self.count}")
        draft.source = SOURCE
        draft.type = type
        draft.data = data
        draft.time = now
        draft.subject = _subject(topic, data)
        draft.datacontenttype = "application/json"
        draft.dataschema = None
        draft.correlationid = correlationid
        draft.scenarioid = self.scenario_id
        draft.runid = self.run_id
        draft.clocktype = "wall"
        draft.eventtime = now
        draft.walltime = now
        draft.marketlane = market
        draft.marketselector = selector
        draft.portfoliolane = portfolio
        draft.strategylane = strategy
        draft.traceparent = None
        draft.extensions = {}
        draft.specversion = SPECVERSION
        envelope = seal(draft)
        self._bus.publish_sync(topic, envelope, validate=False)
        return envelope


def _subject(topic: str, data: Mapping[str, Any]) -> str | None:
    """``order/<id>``, ``trade/<id>``, ``position/<symbol>``, ``pnl/<metric>`` or
    ``risk/<order id>``: Virtufin's ``<entity_type>/<entity_id>`` routing within a topic."""
    tokens = topic.split(".")
    domain = tokens[2]
    if domain == "trading" and tokens[3] == "order" and "order_id" in data:
        return f"order/{data['order_id']}"
    if domain == "trading" and tokens[3] == "trade" and "trade_id" in data:
        return f"trade/{data['trade_id']}"
    if domain == "position":
        return f"position/{data.get('symbol') or tokens[3]}"
    if domain == "pnl":
        return f"pnl/{tokens[3]}"
    if domain == "risk" and "order_id" in data:
        return f"risk/{data['order_id']}"
    return None


class _NoCurve(EquityBook):
    """Live keeps no equity curve: the portfolio's per-fill steps are dropped."""

    __slots__ = ()

    def record(self, row: int, code: int, units_after: float, cash_after: float) -> None:
        return None


# --------------------------------------------------------------------------- one scenario


@dataclass
class _Held:
    envelope: Envelope
    symbol: str
    until_us: int
    since: float = field(default_factory=time.monotonic)


class PaperBook:
    """One scenario's venue and portfolio (see the module docstring).

    Args:
        scenario: the scenario (its lanes go into every event).
        market: the shared cursor.
        settings: fill rule, money, what to consume.
        run_id: the ``runid`` of this book's events (kept across restarts).
    """

    def __init__(
        self, scenario: Scenario, market: LiveMarket, settings: PaperSettings, run_id: str
    ) -> None:
        self.scenario = scenario
        self.sid = scenario.id
        self.market = market
        self.settings = settings
        self.run_id = run_id
        config = settings.backtest_config()
        self.bus = MemoryBus(validator=LaneValidator())
        self.emitter = LiveEmitter(
            bus=self.bus, market=market.view, scenario=scenario, run_id=run_id
        )
        self.venue = SimulatedVenue(
            config=config,
            bus=self.bus,
            market=market.view,
            symbols=market.symbols,
            emitter=self.emitter,
        )
        self.portfolio = Portfolio(
            bus=self.bus,
            market=market.view,
            symbols=market.symbols,
            emitter=self.emitter,
            book=_NoCurve(config.cash),
            cash=config.cash,
            keep_trades=False,
        )
        self.limits = RiskLimits(self.sid)
        self.held: list[_Held] = []
        self.requests: dict[str, str] = {}  # order id → "source|id" of its request
        self.created: dict[str, str] = {}  # order id → created_at
        self.pnl_at = 0.0
        self._outbox: Published = []
        self._input_topic = topics.order_event(self.sid, "submitted")
        self.bus.subscribe_sync(f"sc.{self.sid}.>", self._collect)

    def _collect(self, envelope: Envelope, delivery: Delivery) -> None:
        if envelope.source == SOURCE:
            if (
                self.settings.consume == "accepted"
                and envelope.type == EventTypes.order("accepted")
                and envelope.data.get("order_id") in self._answering
            ):
                return  # the risk filter accepted it already: no second "accepted"
            self._outbox.append((delivery.topic, envelope))

    _answering: frozenset[str] = frozenset()

    def _take(self) -> Published:
        out, self._outbox = self._outbox, []
        return out

    # ------------------------------------------------------------------ orders

    def order_id(self, envelope: Envelope) -> str:
        data = envelope.data if isinstance(envelope.data, Mapping) else {}
        return str(data.get("order_id") or envelope.id)

    def hold_until(self, envelope: Envelope) -> int | None:
        """The bar time an order waits for, or None to hand it to the venue now."""
        if envelope.clocktype != "historical" or envelope.eventtime is None:
            return None
        data = envelope.data if isinstance(envelope.data, Mapping) else {}
        symbol = str(data.get("symbol", ""))
        decided = micros(envelope.eventtime)
        if decided > self.market.last_ts.get(symbol, -(2**63)):
            return decided
        return None

    def hold(self, envelope: Envelope, until_us: int) -> None:
        data = envelope.data if isinstance(envelope.data, Mapping) else {}
        self.held.append(_Held(envelope, str(data.get("symbol", "")), until_us))
        # created when held: its release (`submit`) must not move the stored created_at
        self.created.setdefault(self.order_id(envelope), format_time(datetime.now(UTC)))

    def releasable(
        self, symbol: str | None, *, expired_after: float | None = None
    ) -> list[Envelope]:
        """Held orders whose bar has arrived (or that waited longer than `expired_after`)."""
        if not self.held:
            return []
        now = time.monotonic()
        ready: list[_Held] = []
        keep: list[_Held] = []
        for item in self.held:
            arrived = (
                symbol is not None
                and item.symbol == symbol
                and self.market.last_ts.get(symbol, -(2**63)) >= item.until_us
            )
            expired = expired_after is not None and now - item.since > expired_after
            (ready if arrived or expired else keep).append(item)
        self.held = keep
        return [item.envelope for item in ready]

    def submit(self, envelope: Envelope) -> Published:
        """Risk-check the order and hand it to the venue; returns the events to publish."""
        order_id = self.order_id(envelope)
        self.emitter.scope(f"{envelope.source}|{envelope.id}")
        self.requests[order_id] = f"{envelope.source}|{envelope.id}"
        self.created.setdefault(order_id, format_time(datetime.now(UTC)))
        data = envelope.data if isinstance(envelope.data, Mapping) else {}
        breach = risk_check(self.limits, data, self)
        if breach is not None:
            return self.reject(envelope, breach.reason, breach=breach.to_json())
        self._answering = frozenset({order_id})
        try:
            self.bus.publish_sync(self._input_topic, envelope, validate=False)
        finally:
            self._answering = frozenset()
        return self._take()

    def reject(
        self, envelope: Envelope, reason: str, *, breach: dict[str, Any] | None = None
    ) -> Published:
        """Publish ``order.rejected`` (and ``risk.limit.breach``) without touching the venue."""
        data = envelope.data if isinstance(envelope.data, Mapping) else {}
        order_id = self.order_id(envelope)
        correlation = envelope.correlationid or envelope.id
        payload = {
            "order_id": order_id,
            "symbol": data.get("symbol"),
            "side": data.get("side"),
            "reason": reason,
            "reject_reason": reason,
            "filled_qty": 0.0,
        }
        self.emitter.emit(
            topics.order_event(self.sid, "rejected"),
            EventTypes.order("rejected"),
            payload,
            correlationid=correlation,
        )
        if breach is not None:
            self.emitter.emit(
                topics.risk_event(self.sid, "limit", "breach"),
                EventTypes.risk("limit.breach"),
                {"order_id": order_id, "symbol": data.get("symbol"), **breach},
                correlationid=correlation,
            )
        return self._take()

    # ------------------------------------------------------------------ market

    def on_tick(self, tick_key: str) -> Published:
        """The market cursor moved to a new bar: fill what the venue has pending there."""
        if self.market.current_code not in self.venue.pending:
            return []  # nothing waits on this symbol (the bar is not even built)
        self.emitter.scope(tick_key)
        self.venue.on_bar(self.market.view.row)
        return self._take()

    def unrealized(self, tick_key: str) -> Published:
        """``pnl.unrealized.update`` (at most every `pnl_interval_seconds`)."""
        now = time.monotonic()
        if now - self.pnl_at < self.settings.pnl_interval_seconds or not self.portfolio.open_lots():
            return []
        self.pnl_at = now
        self.emitter.scope(f"{tick_key}|pnl")
        by_symbol = self.portfolio.unrealized()
        self.emitter.emit(
            topics.pnl_event(self.sid, "unrealized"),
            EventTypes.pnl("unrealized.update"),
            {
                "unrealized_pnl": sum(by_symbol.values()),
                "by_symbol": by_symbol,
                "mark_prices": {
                    s: self.market.price(s) for s in by_symbol if self.market.price(s) is not None
                },
                "period": "live",
            },
        )
        return self._take()

    # ------------------------------------------------------------------ state

    def orders(self, ids: Iterable[str]) -> dict[str, Order]:
        wanted = set(ids)
        return {o.order_id: o for o in self.venue.orders if o.order_id in wanted}

    def order_record(self, order: Order, now: str) -> dict[str, Any]:
        final = order.status in _FINAL
        qty = order.qty if order.qty is not None else (order.filled_qty or None)
        remaining = 0.0 if final else (order.qty if order.qty is not None else None)
        return {
            "order_id": order.order_id,
            "symbol": order.symbol,
            "side": order.side,
            "type": order.type,
            "qty": qty,
            "sizing": order.sizing,
            "limit_price": order.limit_price,
            "remaining_qty": remaining,
            "filled_qty": order.filled_qty,
            "avg_price": order.avg_price,
            "fee": order.fee,
            "status": order.status,
            "venue": self.settings.venue,
            "reason": order.reason,
            "reject_reason": order.status_reason if order.status == "rejected" else "",
            "status_reason": order.status_reason,
            "parent_id": order.parent_id,
            "request": self.requests.get(order.order_id, ""),
            "created_at": self.created.get(order.order_id, now),
            "updated_at": now,
        }

    def position_record(self, symbol: str, now: str) -> dict[str, Any]:
        lots = self.portfolio.lots.get(symbol) or deque()
        held = sum(abs(lot.size) for lot in lots)
        avg = sum(abs(lot.size) * lot.entry_price for lot in lots) / held if held else None
        return {
            "symbol": symbol,
            "size": self.portfolio.units.get(symbol, 0.0),
            "avg_price": avg,
            "realized_pnl": self.portfolio.realized.get(symbol, 0.0),
            "liquidation_status": "none",
            "updated_at": now,
        }

    def equity(self) -> float:
        total = self.venue.account.cash
        for symbol, units in self.portfolio.units.items():
            if units:
                mark = self.market.price(symbol)
                if mark is not None:
                    total += units * mark
        return total

    def portfolio_record(self, now: str) -> dict[str, Any]:
        equity = self.equity()
        return {
            "total_value": equity,
            "total_pnl": equity - self.settings.cash,
            "realized_pnl": sum(self.portfolio.realized.values()),
            "position_count": sum(1 for u in self.portfolio.units.values() if u),
            "cash": self.venue.account.cash,
            "updated_at": now,
            "book": self.snapshot(),
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything `restore` needs to continue after a restart."""
        account = self.venue.account
        symbols = self.market.symbols.by_code
        positions = {
            symbols[code].symbol: {"units": units, "avg": account.avg.get(code)}
            for code, units in account.qty.items()
            if units
        }
        lots = {
            symbol: [
                [
                    lot.size,
                    lot.entry_price,
                    lot.entry_fee_per_unit,
                    lot.entry_bar,
                    lot.entry_time_us,
                    lot.order_id,
                    lot.tag,
                ]
                for lot in queue
            ]
            for symbol, queue in self.portfolio.lots.items()
            if queue
        }
        pending = [_order_json(order) for queue in self.venue.pending.values() for order in queue]
        return {
            "version": _BOOK_VERSION,
            "run_id": self.run_id,
            "cash": account.cash,
            "fills": int(getattr(self.venue, "_fills", 0)),
            "positions": positions,
            "portfolio": {
                "cash": self.portfolio.cash,
                "units": dict(self.portfolio.units),
                "realized": dict(self.portfolio.realized),
                "closed": self.portfolio.closed,
                "lots": lots,
            },
            "pending": pending,
            "requests": {o["order_id"]: self.requests.get(o["order_id"], "") for o in pending},
            # so that a pending or held order's record keeps its created_at across a restart
            "created": {
                oid: self.created[oid]
                for oid in [o["order_id"] for o in pending]
                + [self.order_id(h.envelope) for h in self.held]
                if oid in self.created
            },
            "held": [
                {"event": to_dict(h.envelope), "symbol": h.symbol, "until_us": h.until_us}
                for h in self.held
            ],
            "market": {
                symbol: {
                    "interval": self.market.intervals[symbol],
                    "close": self.market.last_close[symbol],
                    "ts_us": self.market.last_ts[symbol],
                }
                for symbol in self.market.last_ts
            },
        }

    def restore(self, book: Mapping[str, Any]) -> None:
        """Continue from a `snapshot` (the venue's and portfolio's own fields are set)."""
        if book.get("version") != _BOOK_VERSION:
            raise ValueError(f"unknown book version {book.get('version')!r}")
        market = self.market
        for symbol, entry in dict(book.get("market") or {}).items():
            if symbol not in market.last_ts:
                market.seed(symbol, entry["interval"], float(entry["close"]), int(entry["ts_us"]))
        account = self.venue.account
        account.cash = float(book["cash"])
        for symbol, entry in dict(book.get("positions") or {}).items():
            code = market.code(symbol, market.intervals.get(symbol, _TRADE_INTERVAL))
            account.qty[code] = float(entry["units"])
            if entry.get("avg") is not None:
                account.avg[code] = float(entry["avg"])
        with contextlib.suppress(AttributeError):
            self.venue._fills = int(book.get("fills", 0))
        folio = book.get("portfolio") or {}
        self.portfolio.cash = float(folio.get("cash", self.portfolio.cash))
        self.portfolio.units = {k: float(v) for k, v in dict(folio.get("units") or {}).items()}
        self.portfolio.realized = {
            k: float(v) for k, v in dict(folio.get("realized") or {}).items()
        }
        self.portfolio.closed = int(folio.get("closed", 0))
        for symbol, rows in dict(folio.get("lots") or {}).items():
            self.portfolio.lots[symbol] = deque(_lot(r) for r in rows)
        requests = dict(book.get("requests") or {})
        created = dict(book.get("created") or {})
        for entry in book.get("pending") or []:
            order = _order_from_json(entry)
            order.code = market.code(order.symbol, market.intervals.get(order.symbol, "1d"))
            self.venue.orders.append(order)
            self.venue.pending.setdefault(order.code, deque()).append(order)
            self.requests[order.order_id] = str(requests.get(order.order_id, ""))
            if order.order_id in created:
                self.created[order.order_id] = str(created[order.order_id])
        for item in book.get("held") or []:
            try:
                envelope = from_dict(item["event"])
            except (EnvelopeError, KeyError, TypeError) as exc:
                log.warning("dropping a held order that cannot be restored: %s", exc)
                continue
            self.held.append(_Held(envelope, str(item.get("symbol", "")), int(item["until_us"])))
            order_id = self.order_id(envelope)
            if order_id in created:
                self.created[order_id] = str(created[order_id])


def _lot(row: list[Any]) -> _Lot:
    size, price, fee, bar, at_us, order_id, tag = row
    return _Lot(
        float(size), float(price), float(fee), int(bar), int(at_us), str(order_id), str(tag)
    )


def _order_json(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "symbol": order.symbol,
        "side": order.side,
        "type": order.type,
        "qty": order.qty,
        "limit_price": order.limit_price,
        "sizing": order.sizing,
        "exclusive": order.exclusive,
        "reason": order.reason,
        "submitted_at_us": order.submitted_at_us,
        "submitted_bar": order.submitted_bar,
        "parent_id": order.parent_id,
        "correlationid": order.correlationid,
    }


def _order_from_json(entry: Mapping[str, Any]) -> Order:
    return Order(
        order_id=str(entry["order_id"]),
        symbol=str(entry["symbol"]),
        side=str(entry["side"]),
        type=str(entry["type"]),
        qty=None if entry.get("qty") is None else float(entry["qty"]),
        limit_price=None if entry.get("limit_price") is None else float(entry["limit_price"]),
        sizing=str(entry["sizing"]),
        exclusive=bool(entry.get("exclusive", False)),
        reason=str(entry.get("reason", "")),
        submitted_at_us=int(entry["submitted_at_us"]),
        submitted_bar=int(entry.get("submitted_bar", 0)),
        parent_id=entry.get("parent_id"),
        correlationid=entry.get("correlationid"),
    )


def state_ops(book: PaperBook, published: Published) -> list[StateOp]:
    """The state writes after `published` went out: touched orders, positions, portfolio."""
    now = format_time(datetime.now(UTC))
    order_ids: dict[str, None] = {}
    symbols: dict[str, None] = {}
    for topic, envelope in published:
        data = envelope.data if isinstance(envelope.data, Mapping) else {}
        kind = topic.split(".")
        if kind[2:4] == ["trading", "order"] and "order_id" in data:
            order_ids[str(data["order_id"])] = None
        if kind[2] == "position" and "symbol" in data:
            symbols[str(data["symbol"])] = None
    ops = [
        StateOp("save", statekeys.order(book.sid, oid), book.order_record(order, now))
        for oid, order in book.orders(order_ids).items()
    ]
    ops += [
        StateOp("save", statekeys.position(book.sid, symbol), book.position_record(symbol, now))
        for symbol in symbols
    ]
    ops.append(StateOp("save", statekeys.portfolio(book.sid), book.portfolio_record(now)))
    return ops


def rejected_record(book: PaperBook, envelope: Envelope, reason: str) -> dict[str, Any]:
    """The stored order of a request refused before it reached the venue."""
    data = envelope.data if isinstance(envelope.data, Mapping) else {}
    now = format_time(datetime.now(UTC))
    order_id = book.order_id(envelope)
    return {
        "order_id": order_id,
        "symbol": data.get("symbol"),
        "side": data.get("side"),
        "type": data.get("type", "market"),
        "qty": data.get("qty"),
        "sizing": data.get("sizing", "units"),
        "limit_price": data.get("limit_price"),
        "remaining_qty": 0.0,
        "filled_qty": 0.0,
        "avg_price": None,
        "fee": 0.0,
        "status": "rejected",
        "venue": book.settings.venue,
        "reason": data.get("reason", ""),
        "reject_reason": reason,
        "status_reason": reason,
        "parent_id": None,
        "request": f"{envelope.source}|{envelope.id}",
        # a held order refused on release keeps the time it was held
        "created_at": book.created.get(order_id, now),
        "updated_at": now,
    }


async def load_book(store: StateStore, book: PaperBook) -> bool:
    """Restore `book` from its portfolio key; False when there is none."""
    item = await store.get(statekeys.portfolio(book.sid))
    if item is None or not isinstance(item.value, Mapping) or "book" not in item.value:
        return False
    book.restore(item.value["book"])
    return True
