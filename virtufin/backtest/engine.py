"""The backtest engine: replay bars through the bus to a hosted worker, a venue and a portfolio.

One run::

    data source ──record batches──▶ replay ──hyp.<sel>.exchange.<venue>.ohlcv.candle.<i>.<sym>──▶
    bus ──▶ worker (runtime engine) ──sc.<sid>.trading.order.submitted──▶ simulated venue
    ──sc.<sid>.trading.order.<accepted|filled|…>──▶ portfolio ──sc.<sid>.position/pnl/trade──▶

The engine registers a fresh backtest scenario (hyp/hyp/hyp) with a fresh run id, validates
each lane once, then publishes bars with ``publish_trusted``. Like nautilus'
`BacktestEngine` feeding its `SimulatedExchange`, the engine hands each bar to the venue
directly (only when the bar's symbol has pending orders) before publishing it, so orders fill
at that bar's open before the strategy sees its close. The equity curve and the statistics are
computed per batch with numpy (`EquityBook`, `StatsAccumulator`), never per bar in Python.

`mode="batch"`: the worker's ``on_batch(record_batch)`` sees whole batches and emits orders
tagged with the bar they were decided on (``{"row": …}`` dicts, or columnar
`workers.kit.batch.OrderBatch`es that a numpy strategy returns without a Python loop); a native
library's ``OnBatch`` gets the batch zero-copy through the Arrow C data interface and hands back
order columns (`virtufin.runtime.native.OrderColumns`). The venue and portfolio then run exactly
as in the event path, so both paths give the same trades. When nobody else subscribes to the
scenario's topics (``sc.<sid>.>``), the batch path publishes no order lifecycle at all: each
decision goes to the venue as an `Order`, the venue hands fills straight to the portfolio, and
runs of all-in market orders the flat account cannot pay for one unit of are rejected in one
go (`SimulatedVenue.unaffordable`); trades, orders, equity and statistics are the same as with
the events published (tests/unit/backtest/test_backtest_fast_paths.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import itertools
import logging
import time
import uuid
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from virtufin import topics
from virtufin.backtest.config import BacktestConfig
from virtufin.backtest.data import BarSource, open_source
from virtufin.backtest.emit import Emitter
from virtufin.backtest.equity import EquityBook, EquityRows
from virtufin.backtest.hosting import BatchRunner, WorkerHost, load_engine
from virtufin.backtest.market import MarketView
from virtufin.backtest.metrics import StatsAccumulator
from virtufin.backtest.portfolio import Portfolio, Trade
from virtufin.backtest.replay import REPLAY_CHUNK, BarBatch, BarEnvelopes, SymbolTable
from virtufin.backtest.results import BacktestResult, ResultsWriter
from virtufin.backtest.venue import Order, SimulatedVenue, order_problem
from virtufin.bus.memory import MemoryBus
from virtufin.bus.validation import LaneValidator
from virtufin.envelope import Envelope, parse_time
from virtufin.errors import ConfigError, ScenarioInactiveError, WorkerError
from virtufin.runtime.engine import Engine
from virtufin.runtime.manifest import WorkerManifest
from virtufin.runtime.native import OrderColumns
from virtufin.scenarios import Scenario, ScenarioRegistry, ScenarioStatus
from virtufin.state.memory import MemoryStateStore
from virtufin.topics import EventTypes
from workers.kit.batch import OrderBatch

__all__ = ["BacktestEngine", "run_backtest"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_SOURCE = topics.source_urn("backtest")
_ORDER_SUBMITTED = EventTypes.order("submitted")
_DEDUP_WINDOW = 4_096
"""The private bus's de-duplication window: a run's ids are unique by construction, so a
short window suffices and memory does not grow with the number of events."""
_REFRESH_SECS = 20.0
"""How often a running backtest re-reads its scenario (well inside the registry's 60 s TTL)."""


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, inside or outside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class _BuyAndHold:
    """Per symbol: the close at its `warmup`-th bar and its last close."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.count: dict[int, int] = {}
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def add(self, batch: BarBatch) -> None:
        sym = batch.sym
        if not batch.n:
            return
        codes = (
            [int(sym[0])]
            if sym[0] == sym[-1] and (sym == sym[0]).all()
            else np.unique(sym).tolist()
        )
        for code in codes:
            rows = None if len(codes) == 1 else np.flatnonzero(sym == code)
            closes = batch.close if rows is None else batch.close[rows]
            seen = self.count.get(code, 0)
            if code not in self.first and seen + len(closes) > self.warmup:
                self.first[code] = float(closes[self.warmup - seen])
            self.count[code] = seen + len(closes)
            self.last[code] = float(closes[-1])

    def percent(self) -> float:
        returns = [(self.last[c] - first) / first * 100 for c, first in self.first.items() if first]
        return float(np.mean(returns)) if returns else float("nan")


class BacktestEngine:
    """Runs one backtest. Build it with a config, call `run(source, strategy)` once.

    Args:
        config: money, fills, costs, ids, output folder.
        bus: the in-process bus to use (e.g. to watch the run's events); default a fresh one
            validating lanes against the registry, with a short de-duplication window.
        registry: where the backtest scenario is registered (default: in memory).
    """

    def __init__(
        self,
        config: BacktestConfig | None = None,
        *,
        bus: MemoryBus | None = None,
        registry: ScenarioRegistry | None = None,
    ) -> None:
        self.config = config or BacktestConfig()
        self.run_id = self.config.run_id or uuid.uuid4().hex[:16]
        self.scenario_id = self.config.scenario_id or f"BT_{self.run_id[:16].upper()}"
        self.registry = registry or ScenarioRegistry(MemoryStateStore())
        self.bus = bus or MemoryBus(
            validator=LaneValidator(self.registry), dedup_window=_DEDUP_WINDOW
        )
        self.market = MarketView()
        self.bars = 0
        self._refreshed = 0.0
        self._batch_ids = itertools.count(1)
        """Numbers of the batch path's order events (``<runid>-batch-<n>``), per run."""

    # ---------------------------------------------------------------- setup

    def _register(self, selector: str, strategy_id: str | None) -> None:
        scenario = Scenario.backtest(
            self.scenario_id,
            selector=selector,
            strategy_id=strategy_id,
            name=f"Backtest run {self.run_id}",
        )
        _run_sync(self.registry.register(scenario, replace_existing=True))
        self._refreshed = time.monotonic()

    def _refresh_scenario(self) -> None:
        """Re-read the scenario (the registry trusts a look-up for at most 60 s, and a long run
        outlives that); stop if somebody paused, archived or deleted it meanwhile."""
        now = time.monotonic()
        if now - self._refreshed < _REFRESH_SECS:
            return
        scenario = _run_sync(self.registry.get(self.scenario_id, fresh=True))
        if scenario.status is not ScenarioStatus.ACTIVE:
            raise ScenarioInactiveError(self.scenario_id, scenario.status.value)
        self._refreshed = now

    def run(
        self,
        source: BarSource,
        strategy: str | WorkerManifest | Engine,
        *,
        params: Mapping[str, Any] | None = None,
    ) -> BacktestResult:
        """Replay `source` through `strategy` (see `load_engine` for what it may be).

        Raises:
            WorkerLoadError, WorkerParamsError: the worker cannot be loaded.
            WorkerError: the worker's engine gave up during the run.
            ConfigError: the data or the mode is unusable.
        """
        cfg = self.config
        selector = cfg.selector or source.selector
        started = time.perf_counter()
        engine = load_engine(
            strategy, params=params, scenario_id=self.scenario_id, run_id=self.run_id
        )
        host = WorkerHost(engine, self.bus)
        try:
            self._register(selector, engine.worker_id)
            return self._run_hosted(source, host, selector, started)
        finally:
            host.stop()

    def _run_hosted(
        self, source: BarSource, host: WorkerHost, selector: str, started: float
    ) -> BacktestResult:
        cfg = self.config
        engine = host.engine
        symbols = SymbolTable(venue=cfg.venue, selector=selector)
        book = EquityBook(cfg.cash)
        market = self.market

        def emitter(name: str) -> Emitter:
            return Emitter(
                bus=self.bus,
                market=market,
                scenario_id=self.scenario_id,
                run_id=self.run_id,
                source=topics.source_urn(f"backtest.{name}"),
            )

        # The batch path without anybody listening on the scenario's topics (checked before
        # the venue and the portfolio subscribe): the order lifecycle is plain calls, venue to
        # portfolio, with no event per step. The event path always publishes it, as live.
        direct = cfg.mode == "batch" and not self.bus.subscribed(f"sc.{self.scenario_id}.>")
        venue = SimulatedVenue(
            config=cfg,
            bus=self.bus,
            market=market,
            symbols=symbols,
            emitter=emitter("venue"),
            publish=not direct,
        )
        stats = StatsAccumulator(risk_free_rate=cfg.risk_free_rate)
        writer = ResultsWriter(cfg.results_dir, keep_in_memory=cfg.keep_equity)
        streamed: list[Trade] = []

        def on_trade(trade: Trade) -> None:
            stats.add_trade(trade)
            if not cfg.keep_trades:
                streamed.append(trade)

        portfolio = Portfolio(
            bus=self.bus,
            market=market,
            symbols=symbols,
            emitter=emitter("portfolio"),
            book=book,
            cash=cfg.cash,
            on_trade=on_trade,
            keep_trades=cfg.keep_trades,
            publish=not direct,
        )
        venue.on_fill = portfolio.book_fill
        batch_runner = host.batch_runner() if cfg.mode == "batch" else None
        if batch_runner is None:
            host.subscribe(f"hyp.{selector}.exchange.{cfg.venue}.ohlcv.candle.>")
        warmup = cfg.warmup_bars
        if warmup is None:
            warmup = int(getattr(getattr(engine, "worker", None), "warmup_bars", 0) or 0)
        bh = _BuyAndHold(warmup)
        bars = BarEnvelopes(
            table=symbols, scenario_id=self.scenario_id, run_id=self.run_id, source=_SOURCE
        )
        unrealized = portfolio.emitter  # one id counter per source: ids stay unique

        replay_started = time.perf_counter()
        gc_was_enabled = gc.isenabled()
        gc.disable()  # the replay allocates millions of short-lived, acyclic objects
        try:
            bars_before, last_ts = 0, -(2**63)
            validated: set[str] = set()
            records = _lookahead(source.batches(cfg.batch_rows))
            for record, is_last in records:
                self._refresh_scenario()
                batch = BarBatch.of(record, symbols, bars_before, last_ts)
                if not batch.n:
                    continue
                market.begin(batch)
                if batch_runner is None:
                    self._replay_events(batch, bars, venue, validated)
                else:
                    self._replay_batch(batch, batch_runner, venue, engine.worker_id)
                self.bars += batch.n
                if host.fatal is not None:
                    raise host.fatal
                if is_last:
                    market.row = batch.n - 1
                    if cfg.finalize_trades:
                        venue.close_all()
                    venue.expire_all(market.ts_us)
                bh.add(batch)
                self._mark(writer, stats, book.close_batch(batch))
                if not direct and portfolio.open_lots():
                    unrealized.emit(
                        topics.pnl_event(self.scenario_id, "unrealized"),
                        EventTypes.pnl("unrealized.update"),
                        {"by_symbol": portfolio.unrealized(), "period": "batch"},
                    )
                market.end()
                if not cfg.keep_trades:
                    writer.add_trades(streamed)
                    writer.add_orders(venue.drain_finished())
                    streamed.clear()
                bars_before, last_ts = int(batch.bar[-1]) + 1, int(batch.ts[-1])
                if gc_was_enabled:
                    gc.collect(1)
            self._mark(writer, stats, book.finish())
            replay_secs = time.perf_counter() - replay_started
        finally:
            if gc_was_enabled:
                gc.enable()
            host.unsubscribe()
            writer.close()
        multi = len(symbols) > 1
        result_stats = stats.compute(
            buy_and_hold_pct=bh.percent(),
            single_market=not multi,
        )
        result = BacktestResult(
            run_id=self.run_id,
            scenario_id=self.scenario_id,
            selector=selector,
            worker_id=engine.worker_id,
            config=cfg,
            stats=result_stats,
            trades=tuple(portfolio.trades),
            orders=tuple(venue.orders),
            bars=self.bars,
            equity_rows=writer.rows,
            elapsed_secs=time.perf_counter() - started,
            replay_secs=replay_secs,
            worker_errors=host.errors,
            results_dir=cfg.results_dir,
            equity=writer.curve(),
            symbols=tuple(s.symbol for s in symbols.by_code),
        )
        writer.finish(result)
        return result

    @staticmethod
    def _mark(writer: ResultsWriter, stats: StatsAccumulator, rows: EquityRows) -> None:
        if len(rows):
            stats.add(rows, rows.close)
            writer.add(rows)

    # ---------------------------------------------------------------- event path

    def _replay_events(
        self, batch: BarBatch, bars: BarEnvelopes, venue: SimulatedVenue, validated: set[str]
    ) -> None:
        check = self.bus.validator.check_sync
        market = self.market
        pending = venue.pending
        on_bar = venue.on_bar
        publish = self.bus.publish_trusted  # lanes checked above; ids unique by construction
        for first in range(0, batch.n, REPLAY_CHUNK):
            topic_list, envelopes = bars.build(batch, first, first + REPLAY_CHUNK)
            for topic in set(topic_list) - validated:
                check(topic, envelopes[topic_list.index(topic)])
                validated.add(topic)
            for row, topic, envelope in zip(
                range(first, first + len(envelopes)), topic_list, envelopes, strict=True
            ):
                market.row = row
                if pending:
                    on_bar(row)
                publish(topic, envelope)

    # ---------------------------------------------------------------- batch path

    def _replay_batch(
        self,
        batch: BarBatch,
        runner: BatchRunner,
        venue: SimulatedVenue,
        worker_id: str,
    ) -> None:
        from workers.kit.clock import HistoricalClock

        clock = HistoricalClock(MarketView.to_datetime(int(batch.ts[-1])))
        try:
            emitted = runner(batch.record, clock)
        except WorkerError:
            raise
        except Exception as exc:
            raise WorkerError(worker_id, f"on_batch raised {type(exc).__name__}: {exc}") from exc
        if venue.publish:
            self._publish_orders(batch, emitted, venue, worker_id)
        else:
            self._submit_orders(batch, emitted, venue)

    def _publish_orders(
        self, batch: BarBatch, emitted: list[Any], venue: SimulatedVenue, worker_id: str
    ) -> None:
        """Somebody listens: each decision is an ``order.submitted`` event at its row."""
        market = self.market
        orders: list[tuple[int, str, Mapping[str, Any]]] = []
        for item in emitted:
            if isinstance(item, OrderColumns | OrderBatch):
                for group in self._groups(batch, venue.symbols, item):
                    orders.extend((row, _ORDER_SUBMITTED, data) for row, data in group.orders())
            else:
                kind, data = _order_of(item)
                orders.append((self._decision_row(batch, data), kind, data))
        orders.sort(key=lambda item: item[0])
        topic = topics.order_event(self.scenario_id, "submitted")
        cursor = 0
        for row, kind, data in orders:
            self._advance(venue, batch, cursor, row)
            market.row = row
            when = MarketView.to_datetime(int(batch.ts[row]))
            envelope = Envelope(
                id=f"{self.run_id}-batch-{next(self._batch_ids)}",
                source=f"urn:com.virtufin.worker.{worker_id}",
                type=kind,
                data=data,
                time=when,
                eventtime=when,
                clocktype="historical",
                scenarioid=self.scenario_id,
                runid=self.run_id,
                marketlane="hyp",
                marketselector=venue.symbols.selector,
                portfoliolane="hyp",
                strategylane="hyp",
            )
            self.bus.publish_sync(topic, envelope)
            cursor = row + 1
        self._advance(venue, batch, cursor, batch.n - 1)

    def _submit_orders(self, batch: BarBatch, emitted: list[Any], venue: SimulatedVenue) -> None:
        """Nobody listens: the decisions go to the venue as `Order`s, in row order (stable, as
        `_publish_orders` sorts its events), with the ids and times their events would have
        had. Columnar groups are expanded without a payload dict per order."""
        parts: list[_Decisions | tuple[int, Mapping[str, Any]]] = []
        for item in emitted:
            if isinstance(item, OrderColumns | OrderBatch):
                parts.extend(
                    _Decisions(group, venue.symbols)
                    for group in self._groups(batch, venue.symbols, item)
                    if len(group)
                )
            else:
                data = _order_of(item)[1]
                parts.append((self._decision_row(batch, data), data))
        if not parts:
            self._advance(venue, batch, 0, batch.n - 1)
            return
        lengths = [len(p.rows) if isinstance(p, _Decisions) else 1 for p in parts]
        rows = np.concatenate(
            [p.rows if isinstance(p, _Decisions) else np.array([p[0]]) for p in parts]
        )
        which = np.repeat(np.arange(len(parts)), lengths)
        index = np.concatenate([np.arange(n) for n in lengths])
        # What the venue needs to resolve runs of all-in market orders at once (`unaffordable`):
        # per order its symbol, side and the row of the next submission; -1: not such an order.
        codes = np.concatenate(
            [
                np.full(len(p.rows), p.code if p.all_in_market else -1, dtype=np.int64)
                if isinstance(p, _Decisions)
                else np.array([-1])
                for p in parts
            ]
        )
        sides = np.concatenate(
            [p.signs if isinstance(p, _Decisions) else np.array([0]) for p in parts]
        )
        if len(rows) > 1 and not (rows[1:] >= rows[:-1]).all():
            by_row = np.argsort(rows, kind="stable")
            rows, which, index = rows[by_row], which[by_row], index[by_row]
            codes, sides = codes[by_row], sides[by_row]
        until = np.append(rows[1:], batch.n - 1)
        others = np.append(np.flatnonzero(codes < 0), len(rows))  # where runs must stop
        market = self.market
        submit = venue.submit
        ids = self._batch_ids
        prefix = f"{self.run_id}-batch-"
        row_list, which_list, index_list = rows.tolist(), which.tolist(), index.tolist()
        code_list = codes.tolist()
        ts_list, bar_list = batch.ts[rows].tolist(), batch.bar[rows].tolist()
        cursor = 0
        j, total = 0, len(row_list)
        while j < total:
            row = row_list[j]
            if venue.pending:
                self._advance(venue, batch, cursor, row)
            if code_list[j] >= 0 and not venue.pending:
                stop = int(others[others.searchsorted(j)])
                run = venue.unaffordable(
                    batch, rows[j:stop], codes[j:stop], sides[j:stop], until[j:stop]
                )
                if run:  # all rejected on their next bars: record them as `_execute` would
                    record = venue.orders.append
                    for k in range(j, j + run):
                        decision = parts[which_list[k]]
                        assert isinstance(decision, _Decisions)
                        ident = prefix + str(next(ids))
                        record(decision.unaffordable(index_list[k], ident, ts_list[k], bar_list[k]))
                    j += run
                    cursor = row_list[j - 1] + 1
                    continue
            market.row = row
            ident = prefix + str(next(ids))
            decision = parts[which_list[j]]
            if isinstance(decision, _Decisions):
                order = decision.order(index_list[j], ident, ts_list[j], bar_list[j])
            else:
                data = decision[1] if isinstance(decision[1], dict) else {}
                order = venue.order_of(data, ident, ident, ts_list[j], bar_list[j])
            submit(order)
            cursor = row + 1
            j += 1
        self._advance(venue, batch, cursor, batch.n - 1)

    def _groups(
        self, batch: BarBatch, symbols: SymbolTable, item: OrderColumns | OrderBatch
    ) -> list[OrderBatch]:
        """A columnar decision as checked `OrderBatch`es (a native worker's columns split by
        the symbol of their rows)."""
        groups = (
            self._order_batches(batch, symbols, item) if isinstance(item, OrderColumns) else [item]
        )
        for group in groups:
            self._check_rows(batch, group)
        return groups

    def _advance(self, venue: SimulatedVenue, batch: BarBatch, first: int, last: int) -> None:
        """Fill pending orders on rows first..last (inclusive), jumping between candidates."""
        market = self.market
        row = first
        while venue.pending and row <= last:
            found = venue.next_fill_row(batch, row, last)
            if found is None:
                return
            market.row = found
            venue.on_bar(found)
            row = found + 1

    @staticmethod
    def _order_batches(
        batch: BarBatch, symbols: SymbolTable, columns: OrderColumns
    ) -> list[OrderBatch]:
        """A native worker's order columns as `OrderBatch`es, one per symbol of their rows."""
        rows = columns.rows
        if not len(rows):
            return []
        if not (int(rows.min()) >= 0 and int(rows.max()) < batch.n):
            raise ConfigError("OnBatch", "rows", f"order rows outside the batch (0..{batch.n - 1})")
        options = dict(columns.options)
        shape: dict[str, Any] = {
            "qty": options.get("qty"),
            "sizing": options.get("sizing", "all_in"),
            "exclusive": options.get("exclusive", True),
            "reason": options.get("reason", ""),
        }
        if columns.limit_prices is not None:
            shape["type"] = "limit"
        codes = batch.sym[rows]
        first = int(codes[0])
        names = symbols.by_code
        try:
            if (codes == first).all():
                return [
                    OrderBatch(
                        names[first].symbol,
                        rows=rows,
                        sides=columns.sides,
                        limit_prices=columns.limit_prices,
                        **shape,
                    )
                ]
            out = []
            for code in np.unique(codes).tolist():
                pick = codes == code
                limits = columns.limit_prices
                out.append(
                    OrderBatch(
                        names[code].symbol,
                        rows=rows[pick],
                        sides=columns.sides[pick],
                        limit_prices=None if limits is None else limits[pick],
                        **shape,
                    )
                )
            return out
        except ValueError as exc:
            raise ConfigError("OnBatch", "orders", str(exc)) from None

    @staticmethod
    def _check_rows(batch: BarBatch, orders: OrderBatch) -> None:
        if len(orders) and not (int(orders.rows.min()) >= 0 and int(orders.rows.max()) < batch.n):
            raise ConfigError(
                "on_batch", "rows", f"OrderBatch rows outside the batch (0..{batch.n - 1})"
            )

    @staticmethod
    def _decision_row(batch: BarBatch, data: Mapping[str, Any]) -> int:
        row = data.get("row")
        if isinstance(row, int) and not isinstance(row, bool):
            if not 0 <= row < batch.n:
                raise ConfigError(
                    "on_batch", "row", f"{row} is outside the batch (0..{batch.n - 1})"
                )
            return row
        decided = data.get("decided_at")
        if not isinstance(decided, str):
            raise ConfigError(
                "on_batch", "decided_at", "orders from on_batch need row or decided_at"
            )
        when = parse_time(decided, field_name="decided_at")
        micros = (when - MarketView.to_datetime(0)) // _MICRO
        found = int(np.searchsorted(batch.ts, micros, side="right")) - 1
        if found < 0:
            raise ConfigError("on_batch", "decided_at", f"{decided} is before the batch")
        return found


_MICRO = MarketView.to_datetime(1) - MarketView.to_datetime(0)


class _Decisions:
    """One `OrderBatch` ready to expand into `Order`s: what its orders share, parsed once as
    `SimulatedVenue.order_of` parses each payload, so the orders are the same."""

    __slots__ = (
        "all_in_market", "code", "exclusive", "ids", "limits", "qty", "reason", "rows", "sides",
        "signs", "sizing", "symbol", "type",
    )  # fmt: skip

    def __init__(self, group: OrderBatch, symbols: SymbolTable) -> None:
        qty = group.qty
        self.rows = group.rows
        self.symbol = str(group.symbol)
        self.type = str(group.type)
        self.qty = (
            float(qty) if isinstance(qty, int | float) and not isinstance(qty, bool) else None
        )
        self.sizing = str(group.sizing)
        self.exclusive = bool(group.exclusive)
        self.reason = str(group.reason)
        self.signs = np.where(group.sides > 0, 1, -1)
        self.sides = ["buy" if side > 0 else "sell" for side in self.signs.tolist()]
        self.limits = group.limit_prices.tolist() if group.type == "limit" else None
        self.ids = group.order_ids
        self.code = symbols.find(self.symbol)
        self.all_in_market = (self.type, self.sizing, self.qty) == ("market", "all_in", None) and (
            self.order(0, "probe", 0, 0).status == "accepted"
        )
        """Valid all-in market orders (`SimulatedVenue.unaffordable` may resolve them)."""

    def order(self, k: int, ident: str, ts_us: int, bar: int) -> Order:
        """The `k`-th order, as if submitted in an event with id `ident` at `ts_us`."""
        limit = self.limits[k] if self.limits is not None else None
        given = self.ids[k] if self.ids is not None else None
        order = Order(
            str(given or ident),
            self.symbol,
            self.sides[k],
            self.type,
            self.qty,
            float(limit) if isinstance(limit, int | float) else None,
            self.sizing,
            self.exclusive,
            self.reason,
            ts_us,
            bar,
            correlationid=ident,
        )
        problem = order_problem(order, self.code)
        if problem:
            order.status, order.status_reason = "rejected", problem
        else:
            assert self.code is not None
            order.code = self.code
        return order

    def unaffordable(self, k: int, ident: str, ts_us: int, bar: int) -> Order:
        """`order` of a valid all-in market order (`all_in_market`) as it ends when the
        margin pays for no unit: rejected on its next bar (built in one go, no checks)."""
        given = self.ids[k] if self.ids is not None else None
        return Order(
            str(given or ident),
            self.symbol,
            self.sides[k],
            "market",
            None,  # qty
            None,  # limit_price
            "all_in",
            self.exclusive,
            self.reason,
            ts_us,
            bar,
            self.code,  # type: ignore[arg-type]  # set: `all_in_market`
            "rejected",
            status_reason="insufficient margin",
            correlationid=ident,
        )


def _order_of(item: Any) -> tuple[str, Mapping[str, Any]]:
    """(type, data) of whatever `on_batch` produced: an `Emission`, an `Envelope` or a dict."""
    if isinstance(item, Envelope):
        return item.type, item.data
    if isinstance(item, Mapping):
        return _ORDER_SUBMITTED, item
    kind, data = item[0], item[1]
    return str(kind), data


def _lookahead(batches: Iterator[pa.RecordBatch]) -> Iterator[tuple[pa.RecordBatch, bool]]:
    """Each non-empty batch with a flag telling whether it is the last one."""
    previous: pa.RecordBatch | None = None
    for batch in batches:
        if not batch.num_rows:
            continue
        if previous is not None:
            yield previous, False
        previous = batch
    if previous is not None:
        yield previous, True


def run_backtest(
    strategy: str | WorkerManifest | Engine,
    data: str | Path | BarSource,
    *,
    params: Mapping[str, Any] | None = None,
    config: BacktestConfig | None = None,
    bus: MemoryBus | None = None,
    data_root: str | Path | None = None,
    symbols: list[str] | None = None,
    interval: str | None = None,
) -> BacktestResult:
    """Backtest `strategy` on `data` and return the result (also written to
    `config.results_dir` when set).

    Args:
        strategy: ``sma_cross`` (bundled), a manifest, ``file.py[:Class]``, ``module:Class``,
            a native library, or a loaded runtime `Engine`.
        data: a CSV/Parquet file, a dataset folder, a selector, or a `BarSource`.
        params: worker parameters (over the manifest's defaults).
        config: see `BacktestConfig`; defaults are backtesting.py's.
        bus: an in-process bus to run on (to watch events); default a private one.
        data_root: where selectors are looked up (default `VIRTUFIN_DATA_ROOT`).
        symbols, interval: restrict the dataset's symbols; force the bar interval of a file.

    Example:
        >>> result = run_backtest("sma_cross", "tests/fixtures/GOOG.csv",
        ...                       params={"fast": 10, "slow": 20},
        ...                       config=BacktestConfig(commission_rate=0.002))  # doctest: +SKIP
        >>> len(result.trades)  # doctest: +SKIP
        93
    """
    source = (
        data
        if isinstance(data, BarSource)
        else open_source(data, data_root=data_root, symbols=symbols, interval=interval)
    )
    return BacktestEngine(config, bus=bus).run(source, strategy, params=params)
