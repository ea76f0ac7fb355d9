"""`RiskLimit`: accept or reject each submitted order by its notional (see the package docstring).

Decision, as in the C twin: price = ``limit_price`` when it is a number, else the symbol's
last close; ``qty`` null (``all_in``) → accepted with ``notional: null`` unless
``allow_all_in`` is false; no price → rejected ``no reference price for <symbol>``;
``qty × price > max_notional`` → rejected ``notional <x.2f> exceeds the limit <y.2f>``.
"""

from __future__ import annotations

import math
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from virtufin.envelope import Envelope
from virtufin.topics import EventTypes
from workers.kit import Worker, WorkerContext

__all__ = ["RiskLimit", "RiskLimitConfig"]

BAR_PREFIX: Final = "com.virtufin.exchange."
BAR_SUFFIX: Final = ".ohlcv.candle"
SUBMITTED: Final = EventTypes.order("submitted")
ACCEPTED: Final = EventTypes.order("accepted")
REJECTED: Final = EventTypes.order("rejected")


class RiskLimitConfig(BaseModel):
    """Usage: ``RiskLimitConfig(max_notional=50_000, allow_all_in=False)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_notional: float = Field(default=100_000.0, gt=0)
    allow_all_in: bool = True


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


class RiskLimit(Worker):
    """Filters submitted orders by notional; remembers last closes from bars."""

    config_class = RiskLimitConfig

    def on_start(self, ctx: WorkerContext) -> None:
        self.config: RiskLimitConfig = ctx.config
        self.marks: dict[str, float] = {}

    def _answer(self, data: dict[str, Any], notional: float | None, reason: str | None) -> None:
        out = dict(data)
        out["notional"] = notional
        if reason is not None:
            out["reject_reason"] = reason
        self.ctx.emit(ACCEPTED if reason is None else REJECTED, out)

    def on_event(self, event: Envelope) -> None:
        kind = event.type
        is_bar = kind.startswith(BAR_PREFIX) and kind.endswith(BAR_SUFFIX)
        if not is_bar and kind != SUBMITTED:
            return
        data = event.data
        symbol = data.get("symbol") if isinstance(data, dict) else None
        if not isinstance(symbol, str):
            raise ValueError("event without a data.symbol string")
        if is_bar:
            close = _number(data.get("close"))
            if close is not None:
                self.marks[symbol] = close
            return
        qty = _number(data.get("qty"))
        price = _number(data.get("limit_price"))
        if price is None:
            price = self.marks.get(symbol)
        limit = self.config.max_notional
        if qty is None:
            if self.config.allow_all_in:
                self._answer(data, None, None)
            else:
                self._answer(data, None, "all_in sizing is not allowed by this risk limit")
            return
        if price is None:
            self._answer(data, None, f"no reference price for {symbol}")
            return
        notional = qty * price
        if not math.isfinite(notional):
            self._answer(data, None, "notional is not a finite number")
        elif notional > limit:
            self._answer(data, notional, f"notional {notional:.2f} exceeds the limit {limit:.2f}")
        else:
            self._answer(data, notional, None)
