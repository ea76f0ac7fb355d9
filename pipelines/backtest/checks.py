"""Checks of the backtest domain.

`market_data_window` carries the bar checks of `pipelines.ingestion.checks` plus
`no_quarantined_rows`, all blocking: bad data in a scenario's window stops its backtest (and
therefore its promotion). `backtest_results` carries `no_worker_errors` (blocking): a worker
that failed on some events produced results nobody should promote.
"""

from __future__ import annotations

from typing import Final

import dagster as dg

__all__ = ["CHECK_WORKER_ERRORS", "worker_errors_result", "worker_errors_spec"]

CHECK_WORKER_ERRORS: Final = "no_worker_errors"


def worker_errors_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        CHECK_WORKER_ERRORS,
        asset=asset,
        blocking=True,
        description="The worker processed every replayed event without raising.",
    )


def worker_errors_result(asset: str, errors: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=CHECK_WORKER_ERRORS,
        passed=errors == 0,
        metadata={"actual": errors, "threshold": 0},
    )
