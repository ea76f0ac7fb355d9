"""Test and benchmark builders: synthetic bars and a reference SMA-crossover worker.

`SmaCrossReference` implements both paths of the worker contract, `on_event` (one bar
envelope) and `on_batch` (one Arrow record batch), with the same arithmetic: moving averages
are differences of a running cumulative sum, which Python and `numpy.cumsum` both add strictly
left to right, so the two paths make bit-identical decisions and therefore identical trades.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from virtufin.backtest.data import BAR_SCHEMA, BarSource
from virtufin.topics import EventTypes
from workers.kit import Worker, WorkerContext
from workers.kit.batch import OrderBatch

__all__ = [
    "ScriptedOrders",
    "SmaCrossConfig",
    "SmaCrossReference",
    "SyntheticBars",
    "synthetic_bars",
]

_SUBMITTED: Final = EventTypes.order("submitted")


def synthetic_bars(
    n: int,
    *,
    symbol: str = "SYN",
    interval_secs: int = 60,
    start_secs: int = 1_600_000_000,
    seed: int = 7,
    volatility: float = 0.001,
) -> pa.Table:
    """A deterministic random-walk OHLCV table in `BAR_SCHEMA` (``ts`` = bar close)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, volatility, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    wiggle = np.abs(rng.normal(0.0, volatility, n))
    high = np.maximum(open_, close) * (1 + wiggle)
    low = np.minimum(open_, close) * (1 - wiggle)
    ts = (start_secs + interval_secs * np.arange(1, n + 1, dtype=np.int64)) * 1_000_000
    interval = f"{interval_secs // 60}m" if interval_secs % 60 == 0 else f"{interval_secs}s"
    return pa.Table.from_arrays(
        [
            pa.array(ts, pa.timestamp("us", tz="UTC")),
            pa.array(open_),
            pa.array(high),
            pa.array(low),
            pa.array(close),
            pa.array(np.full(n, 1_000.0)),
            pa.array([symbol] * n, pa.string()),
            pa.array([interval] * n, pa.string()),
        ],
        schema=BAR_SCHEMA,
    )


class SyntheticBars(BarSource):
    """A random walk of `n` one-minute bars generated batch by batch: a source of any size
    that never exists whole, for memory and throughput benchmarks."""

    def __init__(self, n: int, *, symbol: str = "SYN", seed: int = 7) -> None:
        self.n = n
        self.symbol = symbol
        self.seed = seed
        self.selector = "SYNTH"

    def describe(self) -> str:
        return f"{self.n} synthetic bars"

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        start, last_close = 0, 100.0
        while start < self.n:
            rows = min(batch_rows, self.n - start)
            table = synthetic_bars(
                rows,
                symbol=self.symbol,
                start_secs=1_600_000_000 + 60 * start,
                seed=self.seed + start,
            )
            scale = last_close / 100.0
            scaled = [table.column(0)]
            scaled += [pa.array(table.column(i).to_numpy() * scale) for i in range(1, 5)]
            scaled += [table.column(i) for i in range(5, 8)]
            batch = pa.Table.from_arrays(scaled, schema=BAR_SCHEMA).to_batches()[0]
            last_close = float(batch.column(4)[rows - 1].as_py())
            start += rows
            yield batch


class SmaCrossConfig(BaseModel):
    """SMA periods; `fast` must be shorter than `slow`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fast: int = Field(default=10, ge=1)
    slow: int = Field(default=20, ge=2)

    @model_validator(mode="after")
    def _order(self) -> SmaCrossConfig:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be < slow ({self.slow})")
        return self


class SmaCrossReference(Worker):
    """backtesting.py's `SmaCross` (buy on a fast-over-slow cross, sell on the reverse, all in,
    exclusive), per symbol, on both the event and the batch path."""

    config_class = SmaCrossConfig

    def on_start(self, ctx: WorkerContext) -> None:
        config = ctx.config if isinstance(ctx.config, SmaCrossConfig) else SmaCrossConfig()
        self.fast, self.slow = config.fast, config.slow
        self.warmup_bars = config.slow - 1
        self._state: dict[str, _SymbolState] = {}
        self._orders = 0

    def _symbol(self, symbol: str) -> _SymbolState:
        state = self._state.get(symbol)
        if state is None:
            state = self._state[symbol] = _SymbolState(self.slow)
        return state

    def _order(self, symbol: str, side: str, extra: dict[str, Any] | None = None) -> None:
        self._orders += 1
        data = {
            "order_id": f"{symbol}-{self._orders}",
            "symbol": symbol,
            "venue": "sim",
            "side": side,
            "type": "market",
            "qty": None,
            "limit_price": None,
            "sizing": "all_in",
            "exclusive": True,
            "reason": "sma_cross",
        }
        if extra:
            data.update(extra)
        self.ctx.emit(_SUBMITTED, data)

    def on_event(self, event: Any) -> None:
        data = event.data
        state = self._symbol(data["symbol"])
        state.total += data["close"]
        totals = state.totals
        totals.append(state.total)
        if len(totals) <= self.slow:
            return
        total = state.total
        fast = (total - totals[-self.fast - 1]) / self.fast
        slow = (total - totals[0]) / self.slow
        prev_fast, prev_slow = state.prev_fast, state.prev_slow
        state.prev_fast, state.prev_slow = fast, slow
        if prev_fast < prev_slow and fast > slow:
            self._order(data["symbol"], "buy")
        elif prev_slow < prev_fast and slow > fast:
            self._order(data["symbol"], "sell")

    def on_batch(self, batch: pa.RecordBatch) -> list[OrderBatch]:
        symbols = batch.column(6)
        first = symbols[0].as_py() if batch.num_rows else None
        if first is not None and pc.all(pc.equal(symbols, first)).as_py():
            unique = [first]  # one symbol: cheaper to confirm than to hash every row
        else:
            unique = symbols.unique().to_pylist()
        closes = batch.column(4).to_numpy()
        decided = []
        for symbol in unique:
            if len(unique) == 1:
                rows = None
                values = closes
            else:
                rows = np.flatnonzero(np.asarray(symbols.to_numpy(zero_copy_only=False)) == symbol)
                values = closes[rows]
            orders = self._batch_symbol(symbol, rows, values)
            if orders is not None:
                decided.append(orders)
        return decided

    def _batch_symbol(
        self, symbol: str, rows: np.ndarray[Any, Any] | None, closes: Any
    ) -> OrderBatch | None:
        """The symbol's crossovers in this batch, as one columnar `OrderBatch` (`rows`: the
        symbol's rows in the batch; None when the batch is this symbol only)."""
        state = self._symbol(symbol)
        lead, n = len(state.totals), len(closes)
        # totals = the kept history (its last value is the running total) then the running
        # sums of this batch, added left to right as `on_event` adds them: one buffer, one
        # in-place cumulative sum.
        totals = np.empty(lead + n)
        totals[:lead] = state.totals
        totals[lead:] = closes
        np.cumsum(totals[lead - 1 :], out=totals[lead - 1 :])
        state.total = float(totals[-1])
        end = len(totals)
        state.totals.extend(totals[max(lead, end - (self.slow + 1)) :].tolist())  # new only
        if lead - 1 >= self.slow:  # the kept history ends on a bar with a whole window:
            start, first = lead - 1, lead  # its averages are the "previous" of this batch
        else:  # warming up: the first bar with a whole window has no previous averages
            start = first = self.slow
        if end <= first:
            return None
        head = totals[start:]
        fast = (head - totals[start - self.fast : end - self.fast]) / self.fast
        slow = (head - totals[start - self.slow : end - self.slow]) / self.slow
        if start < first:
            prev_fast, prev_slow, fast, slow = fast[:-1], slow[:-1], fast[1:], slow[1:]
        else:
            prev_fast = np.concatenate(([np.nan], fast[:-1]))
            prev_slow = np.concatenate(([np.nan], slow[:-1]))
        state.prev_fast, state.prev_slow = float(fast[-1]), float(slow[-1])
        buys = (prev_fast < prev_slow) & (fast > slow)
        sells = ~buys & (prev_slow < prev_fast) & (slow > fast)
        at = np.flatnonzero(buys | sells)
        if not len(at):
            return None
        self._orders += len(at)
        positions = at + (first - lead)  # index into this batch's closes of the symbol
        return OrderBatch(
            symbol,
            rows=positions if rows is None else rows[positions],
            sides=np.where(buys[at], 1, -1),
            sizing="all_in",
            exclusive=True,
            reason="sma_cross",
        )


class _SymbolState:
    __slots__ = ("prev_fast", "prev_slow", "total", "totals")

    def __init__(self, slow: int) -> None:
        self.total = 0.0
        self.totals: deque[float] = deque([0.0], maxlen=slow + 1)  # the total before bar 0
        self.prev_fast = float("nan")
        self.prev_slow = float("nan")


class ScriptedOrders(Worker):
    """Emits the orders of ``params["orders"]`` on the bars they name (``"at"``: the bar's
    0-based index among the bars this worker has seen); everything else is order data, except
    ``{"at": n, "fail": "why"}``, which makes the worker raise on bar n."""

    def on_start(self, ctx: WorkerContext) -> None:
        self._seen = 0
        self._script: dict[int, list[dict[str, Any]]] = {}
        for number, item in enumerate(ctx.params.get("orders", [])):
            order: dict[str, Any] = {"order_id": f"o{number + 1}", "type": "market"}
            order["sizing"] = "units"
            order.update({k: v for k, v in item.items() if k != "at"})
            order.setdefault("qty", None)
            order.setdefault("limit_price", None)
            order.setdefault("exclusive", False)
            order.setdefault("reason", "scripted")
            self._script.setdefault(int(item["at"]), []).append(order)

    def on_event(self, event: Any) -> None:
        self._seen += 1
        for order in self._script.get(self._seen - 1, []):
            if "fail" in order:
                raise RuntimeError(order["fail"])
            self.ctx.emit(_SUBMITTED, {"symbol": event.data["symbol"], **order})
