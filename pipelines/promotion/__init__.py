"""Promotion: the gated ladder backtest → paper → shadow → LIVE, and its rollback."""

from __future__ import annotations

import dagster as dg

from pipelines.promotion.assets import (
    BACKTEST_EVIDENCE,
    PAPER_EVIDENCE,
    PROMOTION_GROUP,
    SHADOW_EVIDENCE,
    backtest_evidence,
    paper_evidence,
    shadow_evidence,
)
from pipelines.promotion.schedules import promote_job, rollback_job

__all__ = [
    "BACKTEST_EVIDENCE",
    "PAPER_EVIDENCE",
    "PROMOTION_GROUP",
    "SHADOW_EVIDENCE",
    "build_definitions",
]


def build_definitions() -> dg.Definitions:
    """The promotion domain: the three evidence assets (+ gates), promote and rollback jobs."""
    return dg.Definitions(
        assets=[backtest_evidence, paper_evidence, shadow_evidence],
        jobs=[promote_job, rollback_job],
    )
