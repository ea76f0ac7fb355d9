"""Columnar orders for the batch path: what a vectorised ``on_batch`` decides, as arrays.

A worker that computes its signals with numpy over a whole record batch should not have to
loop over them to emit one order dict each: that loop would cost more than the signals. It
returns (or emits the items of) a list of `OrderBatch`, one per symbol and order shape, and the
backtest engine expands them into ``order.submitted`` events in decision-row order, exactly as
if each had been emitted with ``{"row": row, ...}``.

Example:
    >>> import numpy as np
    >>> batch = OrderBatch("AAA", rows=np.array([3, 9]), sides=np.array([1, -1]))
    >>> [(row, data["side"]) for row, data in batch.orders()]
    [(3, 'buy'), (9, 'sell')]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["OrderBatch"]


@dataclass(frozen=True, slots=True, eq=False)
class OrderBatch:
    """Orders of one symbol decided on the batch's `rows` (0-based, ascending or not).

    Args:
        symbol: the instrument.
        rows: 1-D integer array, the row of the record batch each decision was taken on (the
            order is submitted at that bar's close, as on the event path).
        sides: 1-D array of the same length: ``+1`` buy, ``-1`` sell.
        type: ``market`` or ``limit`` (then `limit_prices` gives each order's price).
        qty: units per order for ``sizing="units"``; None for ``all_in``.
        sizing, exclusive, reason: as in a single order's data.
        order_ids: optional ids, one per order (default: the engine's event ids).
    """

    symbol: str
    rows: Any
    sides: Any
    type: str = "market"
    qty: float | None = None
    limit_prices: Any = None
    sizing: str = "all_in"
    exclusive: bool = True
    reason: str = ""
    order_ids: Sequence[str] | None = None

    def __post_init__(self) -> None:
        rows, sides = np.asarray(self.rows), np.asarray(self.sides)
        if rows.ndim != 1 or (len(rows) and not np.issubdtype(rows.dtype, np.integer)):
            raise ValueError(f"OrderBatch.rows must be a 1-D integer array ({rows.dtype})")
        if sides.shape != rows.shape:
            raise ValueError(f"OrderBatch.sides has {sides.shape}, rows {rows.shape}")
        if len(sides) and not ((sides == 1) | (sides == -1)).all():
            raise ValueError("OrderBatch.sides holds +1 (buy) or -1 (sell) only")
        if self.type == "limit":
            prices = np.asarray(self.limit_prices, dtype=np.float64)
            if prices.shape != rows.shape:
                raise ValueError("a limit OrderBatch needs one limit price per row")
            object.__setattr__(self, "limit_prices", prices)
        if self.order_ids is not None and len(self.order_ids) != len(rows):
            raise ValueError("OrderBatch.order_ids needs one id per row")
        object.__setattr__(self, "rows", rows.astype(np.int64, copy=False))
        object.__setattr__(self, "sides", sides)

    def __len__(self) -> int:
        return len(self.rows)

    def orders(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(decision row, order data) per order, in the order given."""
        limits = self.limit_prices.tolist() if self.type == "limit" else None
        ids = self.order_ids
        for k, (row, side) in enumerate(zip(self.rows.tolist(), self.sides.tolist(), strict=True)):
            data: dict[str, Any] = {
                "symbol": self.symbol,
                "side": "buy" if side > 0 else "sell",
                "type": self.type,
                "qty": self.qty,
                "limit_price": limits[k] if limits is not None else None,
                "sizing": self.sizing,
                "exclusive": self.exclusive,
                "reason": self.reason,
                "row": row,
            }
            if ids is not None:
                data["order_id"] = ids[k]
            yield row, data
