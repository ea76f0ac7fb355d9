"""The replay cursor: which bar is being replayed, and the latest known price of each symbol.

The engine moves the cursor; the venue and the portfolio read it (the historical clock of the
run). Prices are looked up lazily, only when an order needs one, so the hot loop pays nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from virtufin.backtest.replay import BarBatch

__all__ = ["MarketView"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MarketView:
    """Cursor over the current batch plus the last close of every symbol from earlier batches."""

    __slots__ = ("_carry", "batch", "row")

    def __init__(self) -> None:
        self.batch: BarBatch | None = None
        self.row = 0
        self._carry: dict[int, tuple[float, int]] = {}

    def begin(self, batch: BarBatch) -> None:
        self.batch = batch
        self.row = 0

    def end(self) -> None:
        """Remember each symbol's last close of the finished batch."""
        batch = self.batch
        if batch is None or not batch.n:
            return
        sym = batch.sym
        if sym[0] == sym[-1] and (sym == sym[0]).all():
            self._carry[int(sym[0])] = (float(batch.close[-1]), int(batch.ts[-1]))
            return
        codes, first_from_end = np.unique(sym[::-1], return_index=True)
        for code, back in zip(codes.tolist(), first_from_end.tolist(), strict=True):
            row = batch.n - 1 - back
            self._carry[code] = (float(batch.close[row]), int(batch.ts[row]))

    # ---------------------------------------------------------------- reads

    def _batch(self) -> BarBatch:
        assert self.batch is not None, "no batch is being replayed"
        return self.batch

    @property
    def code(self) -> int:
        code: int = self._batch().sym.item(self.row)
        return code

    @property
    def ts_us(self) -> int:
        """Close time of the current bar (the historical "now")."""
        ts: int = self._batch().ts.item(self.row)
        return ts

    @property
    def bar(self) -> int:
        """Equity-curve row of the current bar."""
        bar: int = self._batch().bar.item(self.row)
        return bar

    def last(self, code: int) -> tuple[float, int] | None:
        """(close, close time) of `code`'s latest bar at or before the cursor."""
        batch = self.batch
        if batch is not None:
            row = self.row
            if batch.sym.item(row) == code:
                return float(batch.close.item(row)), batch.ts.item(row)
            hits = np.flatnonzero(batch.sym[: self.row + 1] == code)
            if len(hits):
                row = int(hits[-1])
                return float(batch.close[row]), int(batch.ts[row])
        return self._carry.get(code)

    def close(self, code: int) -> float | None:
        found = self.last(code)
        return None if found is None else found[0]

    @staticmethod
    def to_datetime(micros: int) -> datetime:
        return _EPOCH + timedelta(microseconds=micros)
