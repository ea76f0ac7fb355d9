"""Run the backtest engine on a scenario's slice of the bar dataset (no Dagster here).

The pipelines never re-implement the engine: they hand `virtufin.backtest.run_backtest` a
`HiveDataset` over the scenario's selector, symbols and dates, and read what it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final

from pipelines.backtest.specs import BacktestSpec
from virtufin.backtest import BacktestConfig, BacktestResult, HiveDataset, run_backtest
from virtufin.marketdata import SessionCalendar

__all__ = ["HEADLINE_METRICS", "GateMetrics", "recent_window", "run_spec"]

HEADLINE_METRICS: Final = (
    "return_pct",
    "sharpe_ratio",
    "sortino_ratio",
    "max_drawdown_pct",
    "trades",
    "win_rate_pct",
    "equity_final",
    "buy_and_hold_return_pct",
    "exposure_time_pct",
)


@dataclass(frozen=True, slots=True)
class GateMetrics:
    """What the promotion gates read from a run: Sharpe, max drawdown (positive %), trades."""

    sharpe: float | None
    max_drawdown_pct: float | None
    trades: int

    @classmethod
    def of(cls, metrics: dict[str, Any]) -> GateMetrics:
        def number(key: str) -> float | None:
            value = metrics.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                return float(value)
            return None

        drawdown = number("max_drawdown_pct")
        return cls(
            sharpe=number("sharpe_ratio"),
            max_drawdown_pct=abs(drawdown) if drawdown is not None else None,
            trades=int(number("trades") or 0),
        )


def recent_window(spec: BacktestSpec, sessions: int) -> tuple[date, date]:
    """The last `sessions` sessions of the scenario's range (embedded paper/shadow evidence)."""
    calendar = SessionCalendar(spec.calendar)
    days = calendar.sessions(spec.start, spec.end)
    if not days:
        return spec.start, spec.end
    return days[max(0, len(days) - sessions)], days[-1]


def run_spec(
    spec: BacktestSpec,
    data_root: str | Path,
    *,
    scenario_id: str,
    run_id: str,
    results_dir: Path | None,
    start: date | None = None,
    end: date | None = None,
    params: dict[str, Any] | None = None,
    mode: str = "event",
    finalize_trades: bool = False,
) -> BacktestResult:
    """Replay the spec's data (or ``[start, end]`` of it) through its worker.

    Raises:
        ConfigError: the dataset has no such selector or symbols.
        WorkerError: the worker cannot be loaded or gave up.
    """
    source = HiveDataset(
        data_root,
        spec.selector,
        symbols=list(spec.symbols),
        start=start or spec.start,
        end=end or spec.end,
    )
    config = BacktestConfig(
        cash=spec.cash,
        commission_rate=spec.commission_rate,
        scenario_id=scenario_id,
        run_id=run_id,
        results_dir=results_dir,
        mode=mode,  # type: ignore[arg-type]
        finalize_trades=finalize_trades,
    )
    return run_backtest(
        spec.worker, source, params=spec.params if params is None else params, config=config
    )
