"""`PaperExecution`: the bus side of the paper venue (orders and market data in, events out).

One lock serialises every input, so each is handled as *decide → publish → persist → ack* on
a consistent book (see `services.execution.paper` for why that order makes fills
idempotent). Books (one per scenario) are created on their scenario's first order and restored
from state at start-up, before the subscriptions open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from services.execution.paper import (
    SOURCE,
    LiveMarket,
    PaperBook,
    PaperSettings,
    Published,
    load_book,
    market_tick,
    micros,
    rejected_record,
    state_ops,
)
from services.execution.risk import RiskLimits, limits_key
from virtufin import statekeys, topics
from virtufin.bus.port import Delivery, EventBus, Subscription
from virtufin.envelope import Envelope
from virtufin.errors import PublishRejectedError, ScenarioError, TopicError
from virtufin.lanes import Family, Lane, parse
from virtufin.scenarios import ScenarioRegistry
from virtufin.state.port import StateOp, StateStore

__all__ = ["DoubleFillError", "ExecutionStats", "PaperExecution"]

log = logging.getLogger(__name__)
_PORTFOLIO_SUFFIX: Final = ".position.portfolio"
_EXPIRY_CHECK_SECONDS: Final = 1.0


class DoubleFillError(RuntimeError):
    """A fill was about to be published for an order whose stored status is filled."""


@dataclass
class ExecutionStats:
    """Counters (metrics and tests)."""

    orders: int = 0
    duplicates: int = 0
    rejected: int = 0
    fills: int = 0
    ticks: int = 0
    stale_ticks: int = 0
    held: int = 0
    late: int = 0
    double_fills_prevented: int = 0
    refused_scenario: int = 0


class PaperExecution:
    """Consumes orders and ``act.exchange`` market data; publishes the venue's answers.

    Args:
        bus: the process's bus (publishes are lane-validated against `registry`).
        store: state: orders, positions, portfolio (with the book), risk limits.
        registry: scenario look-ups (lanes; active status).
        settings: fill rule, money, which order event to consume.
        market_pattern: the market data to fill against.
        group_prefix: durable consumer group prefix (replicas of one deployment share it).
    """

    def __init__(
        self,
        *,
        bus: EventBus,
        store: StateStore,
        registry: ScenarioRegistry,
        settings: PaperSettings,
        market_pattern: str = "act.exchange.>",
        group_prefix: str = "execution",
    ) -> None:
        self.bus = bus
        self.store = store
        self.registry = registry
        self.settings = settings
        self.market = LiveMarket(settings.venue)
        self.books: dict[str, PaperBook] = {}
        self.stats = ExecutionStats()
        self._market_pattern = market_pattern
        self._group = group_prefix
        self._lock = asyncio.Lock()
        self._subscriptions: list[Subscription] = []
        self._expiry: asyncio.Task[None] | None = None
        self._stale: set[str] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Restore every persisted book, then subscribe to orders and market data."""
        for key in await self.store.keys("sc."):
            if key.endswith(_PORTFOLIO_SUFFIX) and key.count(".") == 3:
                sid = key.split(".")[1]
                with contextlib.suppress(Exception):
                    await self.book(sid)
        event = self.settings.consume
        order_topic = topics.order_event("LIVE", event).replace("sc.LIVE.", "sc.*.", 1)
        for pattern in (order_topic, order_topic + ".>"):
            self._subscriptions.append(
                await self.bus.subscribe(pattern, self.on_order, group=f"{self._group}-orders")
            )
        self._subscriptions.append(
            await self.bus.subscribe(
                self._market_pattern, self.on_market, group=f"{self._group}-market"
            )
        )
        self._expiry = asyncio.create_task(self._expire_held(), name="execution:held-orders")

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._subscriptions.clear()

    async def book(self, sid: str) -> PaperBook:
        """The scenario's book, created (and restored from state) on first use.

        Raises:
            ScenarioNotFoundError: the scenario is not registered.
        """
        found = self.books.get(sid)
        if found is not None:
            return found
        scenario = await self.registry.get(sid)
        item = await self.store.get(statekeys.portfolio(sid))
        run_id = uuid.uuid4().hex
        if item is not None and isinstance(item.value, Mapping):
            run_id = str((item.value.get("book") or {}).get("run_id") or run_id)
        book = PaperBook(scenario, self.market, self.settings, run_id)
        await load_book(self.store, book)
        limits = await self.store.get(limits_key(sid))
        if limits is not None and isinstance(limits.value, Mapping):
            book.limits = RiskLimits.from_json(sid, limits.value)
        self.books[sid] = book
        return book

    def _invalidate(self, sid: str) -> None:
        """Forget a book whose input failed after it decided (its answers not all published
        and persisted): it continues from its persisted state, as after a crash, so the
        input's redelivery is decided again instead of being taken for a duplicate by the
        book's private bus or seeing a fill that was never published."""
        self.books.pop(sid, None)
        self._stale.add(sid)

    async def _reload(self) -> None:
        """Re-read the books `_invalidate` dropped (their pending orders wait for ticks)."""
        for sid in list(self._stale):
            with contextlib.suppress(ScenarioError):  # gone: nothing left to fill
                await self.book(sid)
            self._stale.discard(sid)

    async def set_limits(self, limits: RiskLimits) -> RiskLimits:
        """Store and apply a scenario's limits (they hold for the next order)."""
        await self.registry.get(limits.scenario_id)
        async with self._lock:
            await self.store.save(limits_key(limits.scenario_id), limits.to_json())
            book = self.books.get(limits.scenario_id)
            if book is not None:
                book.limits = limits
        return limits

    async def get_limits(self, scenario_id: str) -> RiskLimits:
        item = await self.store.get(limits_key(scenario_id))
        if item is None or not isinstance(item.value, Mapping):
            return RiskLimits(scenario_id)
        return RiskLimits.from_json(scenario_id, item.value)

    # ------------------------------------------------------------------ orders

    async def on_order(self, envelope: Envelope, delivery: Delivery) -> None:
        """Bus handler of ``sc.<sid>.trading.order.<submitted|accepted>[.<id>]``."""
        if envelope.source == SOURCE:
            return  # our own answers (the venue publishes order.accepted too)
        try:
            parsed = parse(delivery.topic)
        except TopicError:
            return
        if parsed.family is not Family.SCENARIO or parsed.scenario_id is None:
            return
        if parsed.path[2] != self.settings.consume:
            return
        async with self._lock:
            try:
                await self._order(parsed.scenario_id, envelope)
            except (ScenarioError, PublishRejectedError) as exc:
                # Nothing may be published on an unknown or inactive scenario's lanes.
                self._invalidate(parsed.scenario_id)
                self.stats.refused_scenario += 1
                log.warning("order %s on %s not executed: %s", envelope.id, delivery.topic, exc)
            except Exception:
                self._invalidate(parsed.scenario_id)
                raise  # delivered again

    async def _order(self, sid: str, envelope: Envelope) -> None:
        book = await self.book(sid)
        self.stats.orders += 1
        order_id = book.order_id(envelope)
        request = f"{envelope.source}|{envelope.id}"
        stored = await self.store.get(statekeys.order(sid, order_id))
        if stored is not None:
            if isinstance(stored.value, Mapping) and stored.value.get("request") == request:
                self.stats.duplicates += 1
                log.info("order %s of %s seen before (redelivery); ignored", order_id, sid)
                return
            self.stats.rejected += 1
            book.emitter.scope(request)
            out = book.reject(envelope, f"duplicate order id {order_id!r}")
            await self._publish(out)
            return
        if book.scenario.market.lane is not Lane.ACT:
            book.emitter.scope(request)
            reason = "the live paper venue fills on act market data; this scenario's is hyp"
            await self._commit(book, book.reject(envelope, reason), envelope, reason)
            return
        until = book.hold_until(envelope)
        if until is None:
            # Its state key was just read (absent) under the lock: no stored fill to check.
            await self._submit(book, envelope, unstored=order_id)
            return
        self.stats.held += 1
        book.hold(envelope, until)
        record = rejected_record(book, envelope, "")
        record.update(status="submitted", remaining_qty=record["qty"], reject_reason="")
        await self.store.transact(
            [
                StateOp("save", statekeys.order(sid, order_id), record),
                StateOp(
                    "save",
                    statekeys.portfolio(sid),
                    book.portfolio_record(record["updated_at"]),
                ),
            ]
        )

    async def _submit(self, book: PaperBook, envelope: Envelope, unstored: str = "") -> None:
        if not self.market.started:
            data = envelope.data if isinstance(envelope.data, Mapping) else {}
            why = f"no market data for {data.get('symbol')!r} yet"
            book.emitter.scope(f"{envelope.source}|{envelope.id}")
            await self._commit(book, book.reject(envelope, why), envelope, why)
            return
        late = self._late(envelope)
        out = book.submit(envelope) if late is None else self._submit_late(book, envelope, *late)
        reason = _risk_reason(out)
        refused = envelope if reason is not None else None
        await self._commit(book, out, refused, reason or "", unstored=unstored)

    def _late(self, envelope: Envelope) -> tuple[str, int] | None:
        """(symbol, decision time) of a historical-clock order decided before the symbol's
        latest bar (its strategy lags the market, e.g. catching up after a restart)."""
        if envelope.clocktype != "historical" or envelope.eventtime is None:
            return None
        data = envelope.data if isinstance(envelope.data, Mapping) else {}
        symbol = str(data.get("symbol", ""))
        decided = micros(envelope.eventtime)
        last = self.market.last_ts.get(symbol)
        if last is None or decided >= last:
            return None
        return symbol, decided

    def _submit_late(
        self, book: PaperBook, envelope: Envelope, symbol: str, decided: int
    ) -> Published:
        """Execute a late historical order as the backtest would have: on the bars that
        followed its decision, replayed from the market history; the cursor comes back after."""
        found = self.market.rewind(symbol, decided)
        if found is None:
            log.warning(
                "order %s was decided before the kept market history; filling it on "
                "the current market",
                envelope.id,
            )
            return book.submit(envelope)
        at, later = found
        request = f"{envelope.source}|{envelope.id}"
        try:
            self.market.show(at)
            self.market.end()
            out = book.submit(envelope)
            code = self.market.symbols.find(symbol)
            for tick in later:
                if code is None or not book.venue.pending.get(code):
                    break
                self.market.show(tick)
                out += book.on_tick(f"{request}|{tick.ts_us}")
                self.market.end()
        finally:
            self.market.restore(symbol)
        self.stats.late += 1
        return out

    # ------------------------------------------------------------------ market data

    async def on_market(self, envelope: Envelope, delivery: Delivery) -> None:
        """Bus handler of ``act.exchange.>``: move the cursor, fill, release held orders."""
        try:
            tick = market_tick(delivery.topic, envelope)
        except ValueError as exc:
            log.warning("unusable market event %s on %s: %s", envelope.id, delivery.topic, exc)
            return
        if tick is None:
            return
        async with self._lock:
            if self._stale:
                await self._reload()
            symbol = tick.symbol
            previous = self.market.last_ts.get(symbol), self.market.last_close.get(symbol)
            if not self.market.begin(tick):
                self.stats.stale_ticks += 1
                return
            self.stats.ticks += 1
            key = f"{envelope.source}|{envelope.id}"
            book: PaperBook | None = None
            try:
                try:
                    for book in list(self.books.values()):
                        out = book.on_tick(key)
                        if out:
                            await self._commit(book, out)
                finally:
                    self.market.end()
                for book in list(self.books.values()):
                    for held in book.releasable(symbol):
                        await self._submit(book, held)
                    pnl = book.unrealized(key)
                    if pnl:
                        await self._publish(pnl)
            except Exception:
                # Its redelivery must not look stale, and the failed book must decide anew.
                if book is not None:
                    self._invalidate(book.sid)
                self.market.forget(tick, previous)
                raise

    async def _expire_held(self) -> None:
        """Orders held for a bar that never came go to the venue after `hold_seconds`."""
        while True:
            await asyncio.sleep(_EXPIRY_CHECK_SECONDS)
            async with self._lock:
                for book in list(self.books.values()):
                    try:
                        expired = book.releasable(None, expired_after=self.settings.hold_seconds)
                        for envelope in expired:
                            log.warning("order %s waited too long for its bar", envelope.id)
                            await self._submit(book, envelope)
                    except Exception as exc:
                        self._invalidate(book.sid)  # its held orders come back from state
                        log.warning("releasing held orders failed: %r", exc)
                with contextlib.suppress(Exception):
                    await self._reload()

    # ------------------------------------------------------------------ committing

    async def _publish(self, out: Published) -> None:
        # Issued back to back in order (the broker stores them in order), acked together.
        await self.bus.publish_many(out)

    async def _commit(
        self,
        book: PaperBook,
        out: Published,
        refused: Envelope | None = None,
        reason: str = "",
        *,
        unstored: str = "",
    ) -> None:
        """Check, publish, persist: the outputs of one input (see the module docstring).

        `unstored`: an order whose state key the caller read as absent under the lock (its
        stored status need not be read again before its fill is published).
        """
        filled = [
            str(e.data["order_id"])
            for t, e in out
            if t.endswith(".order.filled") and isinstance(e.data, Mapping)
        ]
        for order_id in filled:
            if order_id == unstored:
                continue
            item = await self.store.get(statekeys.order(book.sid, order_id))
            value = item.value if item is not None else None
            if isinstance(value, Mapping) and value.get("status") == "filled":
                self.stats.double_fills_prevented += 1
                self.books.pop(book.sid, None)  # re-read the book from state next time
                raise DoubleFillError(
                    f"order {order_id} of {book.sid} is filled already; fill not published"
                )
        await self._publish(out)
        self.stats.fills += len(filled)
        ops = state_ops(book, out)
        if refused is not None:
            self.stats.rejected += 1
            ops.insert(
                0,
                StateOp(
                    "save",
                    statekeys.order(book.sid, book.order_id(refused)),
                    rejected_record(book, refused, reason),
                ),
            )
        await self.store.transact(ops)
        for order in book.venue.drain_finished():
            book.requests.pop(order.order_id, None)
            book.created.pop(order.order_id, None)


def _risk_reason(out: Published) -> str | None:
    """The reason of a risk refusal among `out` (the venue never saw that order)."""
    for topic, envelope in out:
        if topic.endswith(".risk.limit.breach") and isinstance(envelope.data, Mapping):
            return str(envelope.data.get("reason", "risk limit"))
    return None


def summary(execution: PaperExecution) -> dict[str, Any]:
    """Counters and book sizes, for logs and metrics."""
    return {
        "books": len(execution.books),
        "pending": sum(len(q) for b in execution.books.values() for q in b.venue.pending.values()),
        **vars(execution.stats),
    }
