"""Virtufin's Dagster code location (``dagster dev -m pipelines``).

Assets (groups): `daily_bars` (ingestion); `market_data_window`, `backtest_results`
(backtest); `backtest_evidence`, `paper_evidence`, `shadow_evidence` (promotion). Jobs:
`ingest_bars`, `backtest`, `parameter_sweep`, `promote`, `rollback`. docs/dagster.md has the
tour; `run_pipeline` runs ingestion → backtests → promotion in this process.
"""

from __future__ import annotations

from pipelines.definitions import build_defs, defs
from pipelines.run import (
    PipelineReport,
    PromotionReport,
    ScenarioReport,
    default_specs,
    run_pipeline,
)

__all__ = [
    "PipelineReport",
    "PromotionReport",
    "ScenarioReport",
    "build_defs",
    "default_specs",
    "defs",
    "run_pipeline",
]
