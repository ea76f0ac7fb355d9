"""Backtests: replay market data through the same workers that run live.

Supports: event-driven replay of OHLCV bars (hive Parquet dataset, CSV, Parquet files) onto
``hyp.<selector>`` lanes of the in-process bus with a historical clock, a registered backtest
scenario and a fresh run id; a deterministic simulated venue with Virtufin's order lifecycle;
a portfolio publishing position, trade and PnL events; backtesting.py-compatible statistics;
Parquet/JSON results; a columnar batch path for workers with ``on_batch``.
docs/spec/backtest.md is the contract.

Example:
    >>> from virtufin.backtest import BacktestConfig, run_backtest
    >>> result = run_backtest("sma_cross", "tests/fixtures/GOOG.csv",
    ...                       params={"fast": 10, "slow": 20},
    ...                       config=BacktestConfig(commission_rate=0.002))  # doctest: +SKIP
    >>> print(result.stats.table())  # doctest: +SKIP
"""

from virtufin.backtest.config import BacktestConfig, FillRule, ReplayMode
from virtufin.backtest.data import (
    BAR_SCHEMA,
    BarSource,
    FileBars,
    HiveDataset,
    TableBars,
    merge_by_time,
    open_source,
)
from virtufin.backtest.engine import BacktestEngine, run_backtest
from virtufin.backtest.metrics import METRICS, Stats
from virtufin.backtest.portfolio import Trade
from virtufin.backtest.results import BacktestResult, EquityCurve
from virtufin.backtest.venue import Order

__all__ = [
    "BAR_SCHEMA",
    "METRICS",
    "BacktestConfig",
    "BacktestEngine",
    "BacktestResult",
    "BarSource",
    "EquityCurve",
    "FileBars",
    "FillRule",
    "HiveDataset",
    "Order",
    "ReplayMode",
    "Stats",
    "TableBars",
    "Trade",
    "merge_by_time",
    "open_source",
    "run_backtest",
]
