"""The ingestion job, its daily schedule, and the drop-folder sensor.

- `daily_bars_schedule` (06:00 UTC): one run per symbol for yesterday, each `RunRequest`'s
  ``partition_key`` and ``run_key`` being the same ``<date>|<symbol>`` key, so a tick that is
  evaluated twice launches nothing twice.
- `late_bars_sensor`: when the market-data source reports new deliveries (a vendor dropped or
  re-dropped files, possibly for old dates), requests those partitions again; the dataset
  writer merges late and corrected rows idempotently.
"""

from collections.abc import Iterator
from datetime import timedelta
from typing import Final

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # the type define_asset_job returns
)

from pipelines.ingestion.assets import DAILY_BARS
from pipelines.ingestion.partitions import Universe, bar_partition_key
from pipelines.ingestion.resources import MarketDataSource

__all__ = [
    "DAILY_BARS_CRON",
    "INGEST_BARS_JOB",
    "build_daily_bars_schedule",
    "build_ingest_bars_job",
    "build_late_bars_sensor",
]

INGEST_BARS_JOB: Final = "ingest_bars"
DAILY_BARS_CRON: Final = "0 6 * * *"


def build_ingest_bars_job() -> UnresolvedAssetJobDefinition:
    """Materialise `daily_bars` (and run its checks) for the selected partitions."""
    return dg.define_asset_job(
        INGEST_BARS_JOB,
        selection=dg.AssetSelection.assets(DAILY_BARS),
        description="Ingest OHLCV bars for (date, symbol) partitions; backfill from the UI.",
    )


def build_daily_bars_schedule(
    universe: Universe, job: UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    """Yesterday's bars for every symbol of `universe`, every day at 06:00 UTC."""

    @dg.schedule(
        name="daily_bars_schedule",
        cron_schedule=DAILY_BARS_CRON,
        execution_timezone="UTC",
        job=job,
        description="Ingest yesterday's bars, one run per symbol.",
    )
    def daily_bars_schedule(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
        day = context.scheduled_execution_time.date() - timedelta(days=1)
        for symbol in universe.symbols:
            key = bar_partition_key(day, symbol)
            yield dg.RunRequest(run_key=str(key), partition_key=key)

    return daily_bars_schedule


def build_late_bars_sensor(
    universe: Universe, job: UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    """Re-ingest partitions the source has new deliveries for (cursor: delivery time, ns)."""

    @dg.sensor(
        name="late_bars_sensor",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Re-ingest partitions that received new or late vendor files.",
    )
    def late_bars_sensor(
        context: dg.SensorEvaluationContext, market_data: MarketDataSource
    ) -> dg.SensorResult:
        since = int(context.cursor or 0)
        touched, cursor = market_data.changed_partitions(since_ns=since)
        start = universe.start_date
        requests = [
            dg.RunRequest(run_key=f"{key}@{cursor}", partition_key=key)
            for symbol, day in sorted(touched)
            if symbol in universe.symbols and day.isoformat() >= start
            for key in (bar_partition_key(day, symbol),)
        ]
        return dg.SensorResult(run_requests=requests, cursor=str(cursor))

    return late_bars_sensor
