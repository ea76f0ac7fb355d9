"""The one configuration of a backtest run: money, fills, costs and where results go.

Defaults are backtesting.py's semantics (`Backtest(data, Strategy)` with `cash=10_000`): market
orders fill at the next bar's open, commission is a fraction of traded value charged on every
fill, no slippage, no leverage (`margin_ratio=1`), open trades at the end stay open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from virtufin.lanes import is_valid_id

__all__ = ["DEFAULT_BATCH_ROWS", "BacktestConfig", "FillRule", "ReplayMode"]

DEFAULT_BATCH_ROWS: Final = 16_384
"""Rows per replayed record batch: big enough to amortise, small enough to stay in cache."""

FillRule = Literal["next-open", "close"]
"""When a market order fills: the open of the symbol's next bar, or the close of the current one."""

ReplayMode = Literal["event", "batch"]
"""`event`: one bar event per bar through the bus; `batch`: whole record batches to `on_batch`."""


class BacktestConfig(BaseModel):
    """How the simulated venue, the portfolio and the replay behave.

    Example:
        >>> BacktestConfig(commission_rate=0.002).fill
        'next-open'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cash: float = Field(default=10_000.0, gt=0, description="starting cash, in quote currency")
    commission_rate: float = Field(
        default=0.0, ge=-0.1, lt=0.1, description="fraction of traded value charged per fill"
    )
    commission_fixed: float = Field(
        default=0.0, ge=0, description="flat fee per fill, quote currency"
    )
    slippage_rate: float = Field(
        default=0.0, ge=0, lt=0.1, description="fill price moved against the order by this fraction"
    )
    margin_ratio: float = Field(
        default=1.0, gt=0, le=1, description="required margin; 1 / leverage (1 = cash account)"
    )
    fill: FillRule = Field(default="next-open", description="when market orders fill")
    finalize_trades: bool = Field(
        default=False, description="close open positions on the last bar so they count in the stats"
    )
    venue: str = Field(
        default="sim", pattern=r"^[a-z0-9_\-]{1,32}$", description="venue token in topics"
    )
    selector: str | None = Field(
        default=None, description="data universe of the hyp lanes (default: from the data source)"
    )
    scenario_id: str | None = Field(
        default=None, description="backtest scenario id (default: BT_<run>)"
    )
    run_id: str | None = Field(default=None, description="run id (default: a fresh one per run)")
    mode: ReplayMode = Field(default="event", description="event-driven or whole-batch replay")
    batch_rows: int = Field(default=DEFAULT_BATCH_ROWS, ge=1, description="rows per replayed batch")
    warmup_bars: int | None = Field(
        default=None, ge=0, description="bars before the first possible trade (Buy & Hold start)"
    )
    risk_free_rate: float = Field(
        default=0.0, gt=-1, lt=1, description="annual, for Sharpe/Sortino"
    )
    results_dir: Path | None = Field(
        default=None, description="where Parquet/JSON results are written"
    )
    keep_trades: bool = Field(
        default=True,
        description="keep trades and orders in the result (off: only in results_dir)",
    )
    keep_equity: bool = Field(
        default=True, description="also keep the equity curve in memory (off for huge runs)"
    )

    @model_validator(mode="after")
    def _ids(self) -> BacktestConfig:
        for name in ("selector", "scenario_id"):
            value = getattr(self, name)
            if value is not None and not is_valid_id(value):
                raise ValueError(f"{name} {value!r} must match ^[A-Z0-9_]{{1,32}}$")
        if self.scenario_id == "LIVE":
            raise ValueError("scenario_id must not be LIVE: a backtest runs in its own scenario")
        return self

    @property
    def leverage(self) -> float:
        return 1.0 / self.margin_ratio
