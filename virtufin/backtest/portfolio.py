"""The portfolio: positions, trades and PnL, built only from the venue's fill events.

It listens to ``sc.<sid>.trading.order.filled[.<id>]`` and publishes, per fill:

- ``sc.<sid>.position.<symbol>.<opened|increased|decreased|flipped|closed>`` (a flip is one
  atomic event), data ``symbol, qty, prev_qty, avg_price, price, order_id, fill_id``;
- ``sc.<sid>.trading.trade.closed`` for each closed trade (lot), ``trade_id`` in the data;
- ``sc.<sid>.pnl.realized.update`` with the running total and ``by_symbol``.

Trades are backtesting.py's: an opposite fill closes open lots first-in first-out; each
closed (part of a) lot is one trade whose commission is its share of the entry fee plus its
share of the exit fee, and whose return is net of that commission.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from virtufin import topics
from virtufin.backtest.emit import Emitter
from virtufin.backtest.equity import EquityBook
from virtufin.backtest.market import MarketView
from virtufin.backtest.replay import SymbolTable
from virtufin.bus.memory import MemoryBus
from virtufin.bus.port import Delivery
from virtufin.envelope import Envelope
from virtufin.errors import TopicError
from virtufin.topics import EventTypes

__all__ = ["Portfolio", "Trade"]

_EPOCH = MarketView.to_datetime(0)
_US = timedelta(microseconds=1)


@dataclass(slots=True)
class _Lot:
    size: float  # signed units still open
    entry_price: float
    entry_fee_per_unit: float
    entry_bar: int
    entry_time_us: int
    order_id: str
    tag: str


@dataclass(frozen=True, slots=True)
class Trade:
    """One closed trade; also a row of ``trades.parquet``."""

    trade_id: str
    symbol: str
    size: float
    entry_bar: int
    exit_bar: int
    entry_price: float
    exit_price: float
    entry_time_us: int
    exit_time_us: int
    pnl: float
    commission: float
    return_pct: float
    entry_order_id: str
    exit_order_id: str
    tag: str

    def to_json(self) -> dict[str, Any]:
        return {
            "trade_id": self.trade_id,
            "symbol": self.symbol,
            "size": self.size,
            "entry_bar": self.entry_bar,
            "exit_bar": self.exit_bar,
            "entry_time": MarketView.to_datetime(self.entry_time_us)
            .isoformat()
            .replace("+00:00", "Z"),
            "exit_time": MarketView.to_datetime(self.exit_time_us)
            .isoformat()
            .replace("+00:00", "Z"),
            "entry_price": self.entry_price,
            "exit_price": self.exit_price,
            "pnl": self.pnl,
            "commission": self.commission,
            "return_pct": self.return_pct,
            "tag": self.tag,
        }


def _kind(before: float, after: float) -> str:
    if not before:
        return "opened"
    if not after:
        return "closed"
    if (before > 0) != (after > 0):
        return "flipped"
    return "increased" if abs(after) > abs(before) else "decreased"


class Portfolio:
    """Positions and trades of one backtest scenario (see the module docstring)."""

    def __init__(
        self,
        *,
        bus: MemoryBus,
        market: MarketView,
        symbols: SymbolTable,
        emitter: Emitter,
        book: EquityBook,
        cash: float,
        on_trade: Callable[[Trade], None] | None = None,
        keep_trades: bool = True,
        publish: bool = True,
    ) -> None:
        self.market = market
        self.publish = publish
        self.symbols = symbols
        self.emitter = emitter
        self.book = book
        self.cash = cash
        self.lots: dict[str, deque[_Lot]] = {}
        self.units: dict[str, float] = {}
        self.realized: dict[str, float] = {}
        self.trades: list[Trade] = []
        self.closed = 0
        self._keep = keep_trades
        self._on_trade = on_trade
        sid = emitter.scenario_id
        self._sid = sid
        self._position_topics: dict[tuple[str, str], str] = {}
        self._trade_topic = topics.trade_event(sid, "closed")
        self._realized_topic = topics.pnl_event(sid, "realized")
        self.subscriptions = [
            bus.subscribe_sync(topics.order_event(sid, "filled"), self.on_filled),
            bus.subscribe_sync(topics.order_event(sid, "filled") + ".>", self.on_filled),
        ]

    def on_filled(self, envelope: Envelope, delivery: Delivery) -> None:
        """Bus handler: book the fill, publish position, trade and PnL events."""
        data = envelope.data
        sign = 1 if data["side"] == "buy" else -1
        when = envelope.eventtime or _EPOCH
        self.book_fill(
            str(data["symbol"]),
            sign * float(data["qty_filled"]),
            float(data["price"]),
            float(data["fee"]),
            str(data["order_id"]),
            data.get("fill_id"),
            (when - _EPOCH) // _US,
            envelope.correlationid,
            str(data.get("reason") or ""),
        )

    def book_fill(
        self,
        symbol: str,
        qty: float,
        price: float,
        fee: float,
        order_id: str,
        fill_id: str | None,
        at_us: int,
        correlationid: str | None,
        tag: str = "",
    ) -> None:
        """Book one fill of `qty` signed units (the fill event's payload, or the venue's direct
        call when it does not publish: `venue.FillSink`), then publish what it changed. `tag`
        (the order's reason) labels the lot a fill opens, and so the trade that closes it."""
        bar = self.market.bar
        before = self.units.get(symbol, 0.0)
        lots = self.lots.get(symbol)
        if lots is None:
            lots = self.lots[symbol] = deque()
        publish = self.publish
        remaining = qty
        exit_fee_per_unit = fee / abs(qty) if qty else 0.0
        realized_now = 0.0
        while remaining and lots and (lots[0].size > 0) != (remaining > 0):
            lot = lots[0]
            closed = min(abs(lot.size), abs(remaining))
            size = closed if lot.size > 0 else -closed
            commission = closed * (lot.entry_fee_per_unit + exit_fee_per_unit)
            gross = size * (price - lot.entry_price)
            pnl = gross - commission
            direction = 1 if size > 0 else -1
            ret = direction * (price / lot.entry_price - 1) - commission / (
                closed * lot.entry_price
            )
            trade = Trade(
                trade_id=f"{self.emitter.run_id}-t{self.closed + 1}",
                symbol=symbol,
                size=size,
                entry_bar=lot.entry_bar,
                exit_bar=bar,
                entry_price=lot.entry_price,
                exit_price=price,
                entry_time_us=lot.entry_time_us,
                exit_time_us=at_us,
                pnl=pnl,
                commission=commission,
                return_pct=ret,
                entry_order_id=lot.order_id,
                exit_order_id=order_id,
                tag=lot.tag,
            )
            self.closed += 1
            if self._keep:
                self.trades.append(trade)
            if self._on_trade is not None:
                self._on_trade(trade)
            realized_now += pnl
            if publish:
                self._publish_trade(trade, at_us)
            lot.size -= size
            remaining += size
            if not lot.size:
                lots.popleft()
        if remaining:
            lots.append(
                _Lot(
                    remaining,
                    price,
                    exit_fee_per_unit,
                    bar,
                    at_us,
                    order_id,
                    tag,
                )
            )
        after = before + qty
        self.units[symbol] = after
        self.cash -= qty * price + fee
        self.realized[symbol] = self.realized.get(symbol, 0.0) + realized_now
        code = self.symbols.find(symbol)
        if code is not None:
            self.book.record(self.market.row, code, after, self.cash)
        if not publish:
            return
        emitter = self.emitter
        kind = _kind(before, after)
        topic = self._position_topic(symbol, kind)
        if not emitter.skips(topic):
            open_lots = self.lots[symbol]
            held = sum(abs(lot.size) for lot in open_lots)
            avg = sum(abs(lot.size) * lot.entry_price for lot in open_lots) / held if held else None
            emitter.emit(
                topic,
                EventTypes.position(kind),
                {
                    "symbol": symbol,
                    "qty": after,
                    "prev_qty": before,
                    "avg_price": avg,
                    "price": price,
                    "order_id": order_id,
                    "fill_id": fill_id,
                },
                at_us=at_us,
                correlationid=correlationid,
            )
        if realized_now and not emitter.skips(self._realized_topic):
            emitter.emit(
                self._realized_topic,
                EventTypes.pnl("realized.update"),
                {
                    "realized_pnl": sum(self.realized.values()),
                    "by_symbol": dict(self.realized),
                    "period": "run",
                    "fill_id": fill_id,
                },
                at_us=at_us,
                correlationid=correlationid,
            )

    def _position_topic(self, symbol: str, kind: str) -> str:
        key = (symbol, kind)
        topic = self._position_topics.get(key)
        if topic is None:
            try:
                topic = topics.position_event(self._sid, symbol, kind)
            except TopicError:
                topic = topics.position_event(self._sid, "portfolio", kind)
            self._position_topics[key] = topic
        return topic

    def _publish_trade(self, trade: Trade, at_us: int) -> None:
        if self.emitter.skips(self._trade_topic):
            return
        self.emitter.emit(
            self._trade_topic,
            EventTypes.trade("closed"),
            trade.to_json(),
            at_us=at_us,
        )

    def unrealized(self) -> dict[str, float]:
        """Unrealized PnL per symbol at the latest closes (for the periodic PnL event)."""
        out: dict[str, float] = {}
        for symbol, lots in self.lots.items():
            code = self.symbols.find(symbol)
            mark = self.market.close(code) if code is not None else None
            if mark is None or not lots:
                continue
            out[symbol] = sum(lot.size * (mark - lot.entry_price) for lot in lots)
        return out

    def open_lots(self) -> int:
        return sum(len(lots) for lots in self.lots.values())
