"""Ingestion: OHLCV bars partitioned by date × symbol into the hive Parquet dataset."""

from __future__ import annotations

import dagster as dg

from pipelines.ingestion.assets import DAILY_BARS, INGESTION_GROUP, build_daily_bars
from pipelines.ingestion.partitions import Universe
from pipelines.ingestion.schedules import (
    build_daily_bars_schedule,
    build_ingest_bars_job,
    build_late_bars_sensor,
)

__all__ = ["DAILY_BARS", "INGESTION_GROUP", "build_definitions"]


def build_definitions(universe: Universe) -> dg.Definitions:
    """The ingestion domain: `daily_bars` (+ checks), `ingest_bars`, its schedule and sensor."""
    job = build_ingest_bars_job()
    return dg.Definitions(
        assets=[build_daily_bars(universe)],
        jobs=[job],
        schedules=[build_daily_bars_schedule(universe, job)],
        sensors=[build_late_bars_sensor(universe, job)],
    )
