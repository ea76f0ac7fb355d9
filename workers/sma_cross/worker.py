"""`SmaCross`: the class-worker version of the SMA crossover (see the package docstring)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from virtufin.envelope import Envelope
from virtufin.topics import EventTypes
from workers.kit import Worker, WorkerContext

__all__ = ["SmaCross", "SmaCrossConfig", "sma"]

BAR_PREFIX: Final = "com.virtufin.exchange."
BAR_SUFFIX: Final = ".ohlcv.candle"
ORDER_SUBMITTED: Final = EventTypes.order("submitted")


class SmaCrossConfig(BaseModel):
    """Windows in bars. Usage: ``SmaCrossConfig(fast=10, slow=20)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fast: int = Field(default=10, ge=1)
    slow: int = Field(default=20, ge=2, le=100_000)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> SmaCrossConfig:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be less than slow ({self.slow})")
        return self


def sma(values: Iterable[float], count: int, window: int) -> float:
    """Mean of the last `window` of `count` values, summed oldest first (as the C twin does)."""
    total = 0.0
    for value in islice(values, count - window, None):
        total += value
    return total / window


class _Window:
    """One symbol's last `slow` closes and its previous bar's two SMAs."""

    __slots__ = ("closes", "previous")

    def __init__(self, slow: int) -> None:
        self.closes: deque[float] = deque(maxlen=slow)
        self.previous: tuple[float, float] | None = None


class SmaCross(Worker):
    """Emits an all-in, exclusive market order whenever the fast SMA crosses the slow one.

    Each symbol has its own window. The state, per symbol the last `slow` closes and the
    previous bar's two SMAs, is snapshotted (``{"symbols": {sym: {"closes": [...],
    "previous": [fast, slow] | null}}}``), so a restarted worker decides on its next bar
    exactly as the uninterrupted one would. Order ids come from ``ctx.order_id()``: the same
    bar always yields the same id.
    """

    config_class = SmaCrossConfig
    state_version = 2  # 2: one window per symbol

    def on_start(self, ctx: WorkerContext) -> None:
        config: SmaCrossConfig = ctx.config
        self.fast = config.fast
        self.slow = config.slow
        self.warmup_bars = config.slow - 1
        """Bars before the first SMA pair exists: the backtest's Buy & Hold starts here, as
        backtesting.py's starts after its indicators' warm-up."""
        self.windows: dict[str, _Window] = {}

    def snapshot(self) -> dict[str, Any]:
        return {
            "symbols": {
                symbol: {
                    "closes": list(w.closes),
                    "previous": None if w.previous is None else [w.previous[0], w.previous[1]],
                }
                for symbol, w in self.windows.items()
            }
        }

    def restore(self, state: Any) -> None:
        self.windows.clear()
        for symbol, saved in state["symbols"].items():
            window = self.windows[symbol] = _Window(self.slow)
            window.closes.extend(float(c) for c in saved["closes"])
            previous = saved["previous"]
            window.previous = None if previous is None else (float(previous[0]), float(previous[1]))

    def on_event(self, event: Envelope) -> None:
        kind = event.type
        if not (kind.startswith(BAR_PREFIX) and kind.endswith(BAR_SUFFIX)):
            return
        if len(kind) <= len(BAR_PREFIX) + len(BAR_SUFFIX):
            return
        data: Any = event.data
        window = self.windows.get(data["symbol"])
        if window is None:
            window = self.windows[data["symbol"]] = _Window(self.slow)
        closes = window.closes
        closes.append(float(data["close"]))
        if len(closes) < self.slow:
            return
        fast = sma(closes, len(closes), self.fast)
        slow = sma(closes, len(closes), self.slow)
        previous = window.previous
        window.previous = (fast, slow)
        if previous is None:
            return
        if previous[0] < previous[1] and fast > slow:
            side, words = "buy", "above"
        elif previous[1] < previous[0] and slow > fast:
            side, words = "sell", "below"
        else:
            return
        order_id = self.ctx.order_id()
        self.ctx.emit(
            ORDER_SUBMITTED,
            {
                "order_id": order_id,
                "symbol": data["symbol"],
                "venue": kind[len(BAR_PREFIX) : -len(BAR_SUFFIX)],
                "side": side,
                "type": "market",
                "qty": None,
                "limit_price": None,
                "sizing": "all_in",
                "exclusive": True,
                "reason": f"fast SMA({self.fast}) crossed {words} slow SMA({self.slow})",
            },
            subject=f"order/{order_id}",
        )
