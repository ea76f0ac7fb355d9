"""Backtests as assets partitioned by scenario, and the parameter sweep."""

from __future__ import annotations

import dagster as dg

from pipelines.backtest.assets import (
    BACKTEST_GROUP,
    BACKTEST_RESULTS,
    MARKET_DATA_WINDOW,
    backtest_results,
    market_data_window,
)
from pipelines.backtest.schedules import backtest_job, parameter_sweep_job

__all__ = [
    "BACKTEST_GROUP",
    "BACKTEST_RESULTS",
    "MARKET_DATA_WINDOW",
    "build_definitions",
]


def build_definitions() -> dg.Definitions:
    """The backtest domain: window and results assets (+ checks), backtest and sweep jobs."""
    return dg.Definitions(
        assets=[market_data_window, backtest_results], jobs=[backtest_job, parameter_sweep_job]
    )
