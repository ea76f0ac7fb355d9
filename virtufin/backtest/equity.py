"""The equity curve, computed per batch with numpy instead of per bar in Python.

Between fills, cash and units are constant, so ``equity = cash + Σ units × last close`` is a
vector expression over the batch; fills only record where the step function changes. One row
per distinct timestamp: when several symbols share a time, the last row of the group counts,
and a group split across two batches is resolved by holding back each batch's last row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from virtufin.backtest.replay import BarBatch

__all__ = ["EquityBook", "EquityRows"]

F64 = np.ndarray[Any, np.dtype[np.float64]]
I64 = np.ndarray[Any, np.dtype[np.int64]]


@dataclass(frozen=True, slots=True)
class EquityRows:
    """Finished equity-curve rows: close time, bar label (start time), equity, and the close
    of the row's bar (the market, for beta, when one symbol is replayed)."""

    ts: I64
    label: I64
    equity: F64
    close: F64

    def __len__(self) -> int:
        return len(self.ts)


class EquityBook:
    """Cash and units per symbol as step functions over the rows of the current batch."""

    __slots__ = ("_carry_close", "_held", "_steps", "cash", "units")

    def __init__(self, cash: float) -> None:
        self.cash = cash
        self.units: dict[int, float] = {}
        self._steps: list[tuple[int, int, float, float]] = []
        self._carry_close: dict[int, float] = {}
        self._held: tuple[int, int, float, float] | None = None

    def record(self, row: int, code: int, units_after: float, cash_after: float) -> None:
        """A fill at `row` (of the current batch) left `units_after` of `code` and this cash."""
        self._steps.append((row, code, units_after, cash_after))

    def close_batch(self, batch: BarBatch) -> EquityRows:
        """Equity rows finished by `batch` (its last row is held back until the next one)."""
        n = batch.n
        steps = self._steps
        cash = np.full(n, self.cash)
        codes = {c for c, u in self.units.items() if u} | {s[1] for s in steps}
        if steps:
            delta = np.zeros(n)
            before = self.cash
            for row, _, _, cash_after in steps:
                delta[row] += cash_after - before
                before = cash_after
            cash += np.cumsum(delta)
            self.cash = before
        equity = cash
        single = n > 0 and batch.sym[0] == batch.sym[-1] and bool((batch.sym == batch.sym[0]).all())
        for code in sorted(codes):
            start_units = self.units.get(code, 0.0)
            units = np.full(n, start_units)
            own = [s for s in steps if s[1] == code]
            if own:
                delta = np.zeros(n)
                before = start_units
                for row, _, units_after, _ in own:
                    delta[row] += units_after - before
                    before = units_after
                units += np.cumsum(delta)
                self.units[code] = before
            if not units.any():
                continue
            if single and int(batch.sym[0]) == code:
                mark = batch.close
            else:
                index = np.where(batch.sym == code, np.arange(n), -1)
                np.maximum.accumulate(index, out=index)
                carry = self._carry_close.get(code, np.nan)
                mark = np.where(index >= 0, batch.close[index], carry)
            equity = equity + units * mark
        self._steps = []
        self._remember_closes(batch, single)
        return self._rows(batch, equity)

    def _remember_closes(self, batch: BarBatch, single: bool) -> None:
        if not batch.n:
            return
        if single:
            self._carry_close[int(batch.sym[0])] = float(batch.close[-1])
            return
        codes, back = np.unique(batch.sym[::-1], return_index=True)
        for code, offset in zip(codes.tolist(), back.tolist(), strict=True):
            self._carry_close[code] = float(batch.close[batch.n - 1 - offset])

    def _rows(self, batch: BarBatch, equity: F64) -> EquityRows:
        ts, label, close = batch.ts, batch.start, batch.close
        n = len(ts)
        if not n:
            return EquityRows(ts[:0], label[:0], equity[:0], close[:0])
        keep = np.empty(n, dtype=bool)
        np.not_equal(ts[1:], ts[:-1], out=keep[:-1])
        keep[-1] = False
        held = self._held
        out = EquityRows(ts[keep], label[keep], equity[keep], close[keep])
        if held is not None and held[0] != ts[0]:
            out = EquityRows(
                np.concatenate(([held[0]], out.ts)),
                np.concatenate(([held[1]], out.label)),
                np.concatenate(([held[2]], out.equity)),
                np.concatenate(([held[3]], out.close)),
            )
        self._held = (int(ts[-1]), int(label[-1]), float(equity[-1]), float(close[-1]))
        return out

    def finish(self) -> EquityRows:
        """The held-back last row."""
        held, self._held = self._held, None
        if held is None:
            empty = np.empty(0, dtype=np.int64)
            return EquityRows(empty, empty, np.empty(0), np.empty(0))
        return EquityRows(
            np.array([held[0]], dtype=np.int64),
            np.array([held[1]], dtype=np.int64),
            np.array([held[2]]),
            np.array([held[3]]),
        )
