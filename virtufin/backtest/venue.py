"""The simulated venue: a deterministic executor with Virtufin's order lifecycle.

It listens to ``sc.<sid>.trading.order.submitted[.<id>]`` and answers on
``sc.<sid>.trading.order.<accepted|filled|rejected|cancelled>`` (the order id is in the payload).
Fill payload:
``order_id, fill_id, symbol, side, qty_filled, price, fee, liquidity, remaining_qty, filled_at,
realized_pnl`` (``remaining_qty == 0`` means done; there is no ``completed`` event).

Semantics are backtesting.py's (`_Broker`), per symbol:

- market orders fill at the open of the symbol's next bar (`fill="next-open"`) or at the close
  of its current bar (`fill="close"`); limit orders fill on the first later bar whose range
  reaches the limit, at the limit or the better open;
- ``sizing="all_in"`` buys as many whole units as the available margin pays for, fee included;
- ``exclusive=true`` cancels the symbol's pending orders and closes its position first (a
  venue-made ``<order_id>-close`` order), like ``exclusive_orders=True``;
- an opposite order first closes the position, then opens the rest; what the margin cannot
  pay for is rejected (nothing filled) or cancelled (the closing part filled).

Deviation, on purpose: `slippage_rate` moves every fill against the order, where
backtesting.py's `spread` applies to opening fills only.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np

from virtufin import topics
from virtufin.backtest.config import BacktestConfig
from virtufin.backtest.emit import Emitter
from virtufin.backtest.market import MarketView
from virtufin.backtest.replay import BarBatch, SymbolTable
from virtufin.bus.memory import MemoryBus
from virtufin.bus.port import Delivery
from virtufin.envelope import Envelope, format_time
from virtufin.topics import EventTypes

__all__ = ["Account", "FillSink", "Order", "SimulatedVenue", "order_problem"]

I64 = np.ndarray[Any, np.dtype[np.int64]]
FULL_EQUITY: Final = 1 - sys.float_info.epsilon
"""backtesting.py's default `size`: all of the equity, a hair under 1 to stay fractional."""

OrderStatus = Literal["accepted", "filled", "rejected", "cancelled"]

FillSink = Callable[[str, float, float, float, str, str, int, "str | None", str], None]
"""``sink(symbol, signed_qty, price, fee, order_id, fill_id, at_us, correlationid, tag)``: where
an unpublished venue hands each fill (`Portfolio.book_fill`); `tag` is the order's reason, as
the published fill carries it."""


@dataclass(slots=True)
class Order:
    """One order as the venue tracks it; also a row of ``orders.parquet``."""

    order_id: str
    symbol: str
    side: str
    type: str
    qty: float | None
    limit_price: float | None
    sizing: str
    exclusive: bool
    reason: str
    submitted_at_us: int
    submitted_bar: int
    code: int = -1
    status: OrderStatus = "accepted"
    filled_qty: float = 0.0
    avg_price: float | None = None
    fee: float = 0.0
    filled_at_us: int | None = None
    filled_bar: int | None = None
    status_reason: str = ""
    parent_id: str | None = None
    correlationid: str | None = None

    @property
    def sign(self) -> int:
        return 1 if self.side == "buy" else -1


def order_problem(order: Order, code: int | None) -> str:
    """Why the venue rejects `order` on submission ("" if it is acceptable); `code` is its
    symbol's code, None for a symbol that was never replayed."""
    if code is None:
        return f"unknown symbol {order.symbol!r}"
    if order.side not in ("buy", "sell"):
        return f"side must be buy or sell ({order.side!r})"
    if order.type not in ("market", "limit"):
        return f"type must be market or limit ({order.type!r})"
    if order.type == "limit" and not (order.limit_price and order.limit_price > 0):
        return "a limit order needs limit_price > 0"
    if order.sizing not in ("units", "all_in"):
        return f"sizing must be units or all_in ({order.sizing!r})"
    if order.sizing == "units" and not (order.qty and order.qty > 0):
        return "sizing=units needs qty > 0"
    if order.sizing == "all_in" and order.qty is not None:
        return "sizing=all_in takes qty=null"
    return ""


class Account:
    """The venue's ledger: cash and signed units per symbol, average cost for realized PnL.

    Cash accounting: a buy pays ``qty * price + fee``, so equity is ``cash + Σ qty * mark``
    (equal to backtesting.py's ``cash + unrealized PnL``).
    """

    __slots__ = ("avg", "cash", "qty")

    def __init__(self, cash: float) -> None:
        self.cash = cash
        self.qty: dict[int, float] = {}
        self.avg: dict[int, float] = {}

    def equity(self, market: MarketView, override: tuple[int, float] | None = None) -> float:
        total = self.cash
        for code, units in self.qty.items():
            if units:
                mark = override[1] if override and override[0] == code else market.close(code)
                total += units * (mark if mark is not None else self.avg[code])
        return total

    def margin_used(
        self, market: MarketView, margin_ratio: float, override: tuple[int, float] | None = None
    ) -> float:
        used = 0.0
        for code, units in self.qty.items():
            if units:
                mark = override[1] if override and override[0] == code else market.close(code)
                used += abs(units) * (mark if mark is not None else self.avg[code]) * margin_ratio
        return used

    def apply(self, code: int, units: float, price: float, fee: float) -> float:
        """Book a fill; returns the gross realized PnL of the part that reduced the position."""
        held = self.qty.get(code, 0.0)
        self.cash -= units * price + fee
        realized = 0.0
        if held and (held > 0) != (units > 0):
            closed = min(abs(held), abs(units))
            realized = closed * (price - self.avg[code]) * (1 if held > 0 else -1)
        after = held + units
        if after == 0:
            self.avg.pop(code, None)
        elif not held or (held > 0) != (after > 0):
            self.avg[code] = price
        elif (held > 0) == (units > 0):
            self.avg[code] = (self.avg[code] * abs(held) + price * abs(units)) / abs(after)
        self.qty[code] = after
        return realized


class SimulatedVenue:
    """Executes the strategy's orders against the replayed bars (see the module docstring).

    Args:
        publish: publish the order lifecycle on the bus (the portfolio books the fill
            events). Off (the batch path when nobody else listens on the scenario's topics):
            nothing is published and each fill goes straight to `on_fill`, one function call
            instead of an envelope per lifecycle step; orders, fills and trades are the same.
        on_fill: where fills go when not publishing (`Portfolio.book_fill`).
    """

    def __init__(
        self,
        *,
        config: BacktestConfig,
        bus: MemoryBus,
        market: MarketView,
        symbols: SymbolTable,
        emitter: Emitter,
        publish: bool = True,
        on_fill: FillSink | None = None,
    ) -> None:
        self.config = config
        self.publish = publish
        self.on_fill = on_fill
        self.market = market
        self.symbols = symbols
        self.emitter = emitter
        self.account = Account(config.cash)
        self.orders: list[Order] = []
        self.pending: dict[int, deque[Order]] = {}
        self._fills = 0
        sid = emitter.scenario_id
        self._sid = sid
        self._topics: dict[str, tuple[str, str]] = {}
        self.subscriptions = [
            bus.subscribe_sync(topics.order_event(sid, "submitted"), self.on_submitted),
            bus.subscribe_sync(topics.order_event(sid, "submitted") + ".>", self.on_submitted),
        ]

    # ---------------------------------------------------------------- events out

    def _wanted(self, kind: str) -> tuple[str, str] | None:
        """(topic, type) of a `kind` order event if one is to be published now; None when the
        venue does not publish or nobody listens (its id is used up all the same).

        Order events go to ``sc.<sid>.trading.order.<kind>`` (the id is in the payload, so
        the set of topics, and the bus's route and validation caches, stay bounded)."""
        if not self.publish:
            return None
        found = self._topics.get(kind)
        if found is None:
            found = self._topics[kind] = (
                topics.order_event(self._sid, kind),
                EventTypes.order(kind),
            )
        return None if self.emitter.skips(found[0]) else found

    def _emit(
        self,
        wanted: tuple[str, str],
        order: Order,
        data: dict[str, Any],
        at_us: int | None = None,
    ) -> None:
        payload = {"order_id": order.order_id, "symbol": order.symbol, "side": order.side, **data}
        self.emitter.emit(
            wanted[0], wanted[1], payload, at_us=at_us, correlationid=order.correlationid
        )

    def _finish(
        self, order: Order, status: OrderStatus, reason: str, at_us: int | None = None
    ) -> None:
        order.status = status
        order.status_reason = reason
        wanted = self._wanted(status)
        if wanted is not None:
            self._emit(wanted, order, {"reason": reason, "filled_qty": order.filled_qty}, at_us)

    # ---------------------------------------------------------------- orders in

    def on_submitted(self, envelope: Envelope, delivery: Delivery) -> None:
        """Bus handler: validate, accept, and fill now (close rule) or queue."""
        market = self.market
        batch = market.batch  # `market.ts_us` and `market.bar`, read once
        assert batch is not None, "no batch is being replayed"
        row = market.row
        data = envelope.data if isinstance(envelope.data, dict) else {}
        ident = envelope.id
        order = self.order_of(
            data, ident, envelope.correlationid or ident, batch.ts.item(row), batch.bar.item(row)
        )
        self.submit(order)

    def submit(self, order: Order) -> None:
        """Take one parsed order (`order_of`) at the cursor's bar: accept, and fill now (close
        rule) or queue; a rejected one is only recorded. The bus handler and the batch path's
        direct submissions both come here, so both run one lifecycle."""
        self.orders.append(order)
        if order.status == "rejected":
            self._finish(order, "rejected", order.status_reason)
            return
        wanted = self._wanted("accepted")
        if wanted is not None:
            self._emit(
                wanted,
                order,
                {
                    "type": order.type,
                    "qty": order.qty,
                    "sizing": order.sizing,
                    "reason": order.reason,
                },
            )
        code = order.code
        queue = self.pending.get(code)
        if queue is None:
            queue = self.pending[code] = deque()
        if order.exclusive:
            for other in list(queue):
                self._finish(other, "cancelled", "exclusive")
            queue.clear()
            held = self.account.qty.get(code, 0.0)
            if held:
                close = Order(
                    order_id=f"{order.order_id}-close",
                    symbol=order.symbol,
                    side="sell" if held > 0 else "buy",
                    type="market",
                    qty=None,
                    limit_price=None,
                    sizing="close",
                    exclusive=False,
                    reason="exclusive",
                    submitted_at_us=order.submitted_at_us,
                    submitted_bar=order.submitted_bar,
                    code=code,
                    parent_id=order.order_id,
                    correlationid=order.correlationid,
                )
                self.orders.append(close)
                wanted = self._wanted("accepted")
                if wanted is not None:
                    self._emit(
                        wanted,
                        close,
                        {"type": "market", "qty": None, "sizing": "close", "reason": "exclusive"},
                    )
                queue.append(close)
        queue.append(order)
        if self.config.fill == "close":
            self._fill_at_close(code)
        if not queue:
            del self.pending[code]

    def order_of(
        self, data: dict[str, Any], fallback_id: str, correlationid: str, now_us: int, bar: int
    ) -> Order:
        """The order an ``order.submitted`` payload describes, submitted at `now_us` on equity
        row `bar`; status ``rejected`` (with the reason) when a field is unusable.
        `fallback_id` is the order id when the payload names none (the event id)."""
        get = data.get
        qty, limit = get("qty"), get("limit_price")
        order = Order(  # positional: a third cheaper than keywords, on every order
            str(get("order_id") or fallback_id),  # order_id
            str(get("symbol", "")),  # symbol
            str(get("side", "")),  # side
            str(get("type", "market")),  # type
            float(qty) if isinstance(qty, int | float) and not isinstance(qty, bool) else None,
            float(limit) if isinstance(limit, int | float) else None,  # limit_price
            str(get("sizing", "units")),  # sizing
            bool(get("exclusive", False)),  # exclusive
            str(get("reason", "")),  # reason
            now_us,  # submitted_at_us
            bar,  # submitted_bar
            correlationid=correlationid,
        )
        code = self.symbols.find(order.symbol)
        problem = order_problem(order, code)
        if problem:
            order.status, order.status_reason = "rejected", problem
        else:
            assert code is not None
            order.code = code
        return order

    # ---------------------------------------------------------------- fills

    def on_bar(self, row: int) -> None:
        """The engine calls this before publishing bar `row` whose symbol has pending orders."""
        batch = self.market.batch
        assert batch is not None
        code = batch.sym.item(row)  # `.item`: a Python int without a numpy scalar
        queue = self.pending.get(code)
        if not queue:
            return
        start, close_ts = batch.start.item(row), batch.ts.item(row)
        open_ = float(batch.open.item(row))  # float even for a batch built of ints
        high, low = float(batch.high.item(row)), float(batch.low.item(row))
        for order in list(queue) if len(queue) > 1 else (queue[0],):
            if order.status != "accepted" or close_ts <= order.submitted_at_us:
                continue  # the first bar that closes after the decision is the next bar
            at_us = max(start, order.submitted_at_us)
            if order.type == "market":
                price = open_
                if self.config.fill == "close":  # queued for lack of a price: this bar's close
                    price, at_us = float(batch.close.item(row)), close_ts
            else:
                assert order.limit_price is not None
                limit = order.limit_price
                if order.side == "buy":
                    if low > limit:
                        continue
                    price = min(open_, limit)
                else:
                    if high < limit:
                        continue
                    price = max(open_, limit)
            queue.remove(order)
            self._execute(order, price, at_us)
        if not queue:
            del self.pending[code]

    def next_fill_row(self, batch: BarBatch, first: int, last: int) -> int | None:
        """The first row in first..last where a pending order could fill (the batch path).

        Per order a binary search in its symbol's rows (sources yield bars sorted by close
        time): the first of them after `first` that closes after the decision; a limit order
        then scans forward for a bar that reaches its price.
        """
        best: int | None = None
        for code, queue in self.pending.items():
            rows, closes = batch.rows_of(code)
            begin = int(rows.searchsorted(first, side="left"))
            end = int(rows.searchsorted(last, side="right"))
            for order in queue:
                at = max(begin, int(closes.searchsorted(order.submitted_at_us, side="right")))
                if at >= end:
                    continue
                if order.type == "limit":
                    assert order.limit_price is not None
                    window = rows[at:end]
                    if order.side == "buy":
                        hits = np.flatnonzero(batch.low[window] <= order.limit_price)
                    else:
                        hits = np.flatnonzero(batch.high[window] >= order.limit_price)
                    if not len(hits):
                        continue
                    at += int(hits[0])
                row = int(rows[at])
                if best is None or row < best:
                    best = row
        return best

    def unaffordable(self, batch: BarBatch, rows: I64, codes: I64, sides: I64, until: I64) -> int:
        """How many of the next all-in market orders the venue would reject one after the other
        for insufficient margin, with nothing else happening (the batch path resolves them
        at once): the k-th is submitted on row ``rows[k]`` for symbol ``codes[k]`` (side
        ``sides[k]``, +1/-1) and the next submission comes on row ``until[k]``.

        That holds while the account is flat and nothing is pending (so margin and cash do not
        move), fills are at the next open, and each order's next bar comes before the next
        submission and prices more than the margin pays for one unit: `_execute` would size
        it to 0 units. 0 when the first one is not such an order."""
        cfg = self.config
        if cfg.fill != "next-open" or self.pending or any(self.account.qty.values()):
            return 0
        # `_available` when flat, then `_execute`'s all-in sizing: for budget >= 0 and a price
        # per unit > 0, ``floor(budget // per_unit) <= 0`` exactly when budget < per_unit.
        budget = max(0.0, self.account.cash - 0.0) * cfg.leverage * FULL_EQUITY
        # The first order in Python (cheap when, as usual, it is affordable), then windows.
        row, code = int(rows[0]), int(codes[0])
        symbol_rows, closes = batch.rows_of(code)
        at = max(
            int(symbol_rows.searchsorted(row + 1, side="left")),
            int(closes.searchsorted(batch.ts.item(row), side="right")),
        )
        if at >= len(symbol_rows) or symbol_rows.item(at) > until.item(0):
            return 0
        raw = float(batch.open.item(symbol_rows.item(at)))
        slipped = raw * (1 + int(sides[0]) * cfg.slippage_rate)
        per_unit = slipped + cfg.commission_fixed + raw * cfg.commission_rate
        if not (per_unit > 0 and budget < per_unit):
            return 0
        done, size = 1, 32
        while done < len(rows):
            stop = min(len(rows), done + size)
            window = slice(done, stop)
            good = self._unaffordable(
                batch, budget, rows[window], codes[window], sides[window], until[window]
            )
            if not good.all():
                return done + int(np.argmin(good))
            done, size = stop, size * 2
        return done

    def _unaffordable(
        self, batch: BarBatch, budget: float, rows: I64, codes: I64, sides: I64, until: I64
    ) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Per order (see `unaffordable`): its fill row exists, comes no later than
        ``until``, and its price per unit is positive and above `budget`."""
        cfg = self.config
        fills = np.full(len(rows), -1, dtype=np.int64)
        for code in np.unique(codes).tolist():
            pick = codes == code
            symbol_rows, closes = batch.rows_of(code)
            if not len(symbol_rows):
                continue
            decided = rows[pick]
            at = np.maximum(
                symbol_rows.searchsorted(decided + 1, side="left"),
                closes.searchsorted(batch.ts[decided], side="right"),
            )
            inside = at < len(symbol_rows)
            fills[pick] = np.where(inside, symbol_rows[np.minimum(at, len(symbol_rows) - 1)], -1)
        found = fills >= 0
        raw = batch.open[np.where(found, fills, 0)]
        # `_execute`'s arithmetic, operation for operation
        per_unit = (
            raw * (1 + sides * cfg.slippage_rate) + cfg.commission_fixed + raw * cfg.commission_rate
        )
        ok: np.ndarray[Any, np.dtype[np.bool_]] = (
            found & (fills <= until) & (per_unit > 0) & (budget < per_unit)
        )
        return ok

    def close_all(self) -> None:
        """`finalize_trades`: close every open position at its last close."""
        market = self.market
        for code, units in sorted(self.account.qty.items()):
            last = market.last(code)
            if not units or last is None:
                continue
            symbol = self.symbols.by_code[code].symbol
            order = Order(
                order_id=f"finalize-{symbol}",
                symbol=symbol,
                side="sell" if units > 0 else "buy",
                type="market",
                qty=None,
                limit_price=None,
                sizing="close",
                exclusive=False,
                reason="finalize",
                submitted_at_us=last[1],
                submitted_bar=market.bar,
                code=code,
            )
            self.orders.append(order)
            wanted = self._wanted("accepted")
            if wanted is not None:
                self._emit(
                    wanted,
                    order,
                    {"type": "market", "qty": None, "sizing": "close", "reason": "finalize"},
                    last[1],
                )
            self._execute(order, last[0], last[1])

    def _fill_at_close(self, code: int) -> None:
        last = self.market.last(code)
        queue = self.pending.get(code)
        if last is None or not queue:
            return
        price, at_us = last
        for order in list(queue):
            if order.type == "market" and order.status == "accepted":
                queue.remove(order)
                self._execute(order, price, at_us)

    def _execute(self, order: Order, raw_price: float, at_us: int) -> None:
        cfg = self.config
        account = self.account
        code = order.code
        held = account.qty.get(code, 0.0)
        sign = 1 if order.side == "buy" else -1  # `order.sign`
        if order.sizing == "close":
            if not held:
                self._finish(order, "cancelled", "flat", at_us)
                return
            target = -held
        else:
            slipped = raw_price * (1 + sign * cfg.slippage_rate)
            per_unit = slipped + cfg.commission_fixed + raw_price * cfg.commission_rate
            if order.sizing == "all_in":
                available = self._available(code, raw_price)
                units = math.floor(available * cfg.leverage * FULL_EQUITY // per_unit)
                if units <= 0:
                    self._finish(order, "rejected", "insufficient margin", at_us)
                    return
                target = float(sign * units)
            else:
                assert order.qty is not None
                target = sign * order.qty
        price = raw_price * (1 + sign * cfg.slippage_rate)
        closing = min(abs(held), abs(target)) if held and (held > 0) != (target > 0) else 0.0
        opening = abs(target) - closing
        fee = 0.0
        realized = 0.0
        filled = 0.0
        if closing:
            part_fee = cfg.commission_fixed + closing * raw_price * cfg.commission_rate
            realized += account.apply(code, sign * closing, price, part_fee)
            fee += part_fee
            filled += closing
        if opening:
            part_fee = cfg.commission_fixed + opening * raw_price * cfg.commission_rate
            need = opening * price + part_fee
            if need > self._available(code, raw_price) * cfg.leverage:
                opening = 0.0
            else:
                realized += account.apply(code, sign * opening, price, part_fee)
                fee += part_fee
                filled += opening
        if not filled:
            self._finish(order, "rejected", "insufficient margin", at_us)
            return
        self._fills += 1
        order.filled_qty = filled
        order.avg_price = price
        order.fee = fee
        order.filled_at_us = at_us
        order.filled_bar = self.market.bar
        remaining = abs(target) - filled
        order.status = "filled"
        fill_id = f"{order.order_id}-f{self._fills}"
        if not self.publish:
            sink = self.on_fill
            assert sink is not None, "an unpublished venue needs on_fill"
            symbol, order_id = order.symbol, order.order_id
            sink(
                symbol,
                sign * filled,
                price,
                fee,
                order_id,
                fill_id,
                at_us,
                order.correlationid,
                order.reason,
            )
        else:
            wanted = self._wanted("filled")
            if wanted is not None:
                self._emit(
                    wanted,
                    order,
                    {
                        "fill_id": fill_id,
                        "qty_filled": filled,
                        "price": price,
                        "fee": fee,
                        "liquidity": "taker",
                        "remaining_qty": remaining,
                        "filled_at": format_time(MarketView.to_datetime(at_us)),
                        "realized_pnl": realized,
                        "venue": cfg.venue,
                        "position_qty": account.qty.get(code, 0.0),
                        "reason": order.reason,
                    },
                    at_us,
                )
        if remaining:
            self._finish(order, "cancelled", "insufficient margin", at_us)

    def _available(self, code: int, mark: float) -> float:
        """backtesting.py's `margin_available`: equity less the margin of open positions
        (`Account.equity` and `Account.margin_used` in one pass, the same sums)."""
        account = self.account
        equity = account.cash
        used = 0.0
        ratio = self.config.margin_ratio
        market = self.market
        for held, units in account.qty.items():
            if units:
                price = mark if held == code else market.close(held)
                if price is None:
                    price = account.avg[held]
                equity += units * price
                used += abs(units) * price * ratio
        return max(0.0, equity - used)

    def drain_finished(self) -> list[Order]:
        """Hand over and forget the orders that reached a final status (`keep_trades=False`:
        the results writer streams them, so memory does not grow with the run)."""
        done = [o for o in self.orders if o.status != "accepted"]
        self.orders = [o for o in self.orders if o.status == "accepted"]
        return done

    def expire_all(self, at_us: int) -> None:
        """End of data: whatever is still pending is cancelled."""
        for queue in self.pending.values():
            for order in queue:
                self._finish(order, "cancelled", "end of data", at_us)
        self.pending.clear()
