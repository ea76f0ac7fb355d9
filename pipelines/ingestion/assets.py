"""The bar asset: fetch, validate, quarantine, write, measure — per (date, symbol) partition.

A run may cover many partitions (backfills run as one run per range: `BackfillPolicy.
single_run`), so a three-month backfill of ten symbols is one process, not 900.
"""

import warnings
from collections.abc import Iterator
from datetime import date
from typing import Any, Final

import dagster as dg

from pipelines.ingestion.checks import QualityTally, bar_check_specs
from pipelines.ingestion.partitions import (
    DATE_DIMENSION,
    SYMBOL_DIMENSION,
    Universe,
    daily_bars_partitions,
)
from pipelines.ingestion.resources import MarketDataSource
from pipelines.resources import StorageResource
from virtufin.marketdata import (
    read_partition,
    split_valid,
    write_partition,
    write_quarantine,
)

__all__ = ["DAILY_BARS", "INGESTION_GROUP", "build_daily_bars"]

INGESTION_GROUP: Final = "ingestion"
DAILY_BARS: Final = "daily_bars"


def _keys(
    context: dg.AssetExecutionContext, partitions: dg.MultiPartitionsDefinition
) -> list[tuple[date, str]]:
    """The run's (date, symbol) partitions, in date order."""
    out = []
    for key in context.partition_keys:
        multi = (
            key
            if isinstance(key, dg.MultiPartitionKey)
            else partitions.get_partition_key_from_str(key)
        )
        dims = multi.keys_by_dimension
        out.append((date.fromisoformat(dims[DATE_DIMENSION]), dims[SYMBOL_DIMENSION]))
    return sorted(out)


def build_daily_bars(universe: Universe) -> dg.AssetsDefinition:
    """The `daily_bars` asset over `universe`'s partitions."""

    partitions = daily_bars_partitions(universe)
    with warnings.catch_warnings():
        # single-run backfills (BackfillPolicy) are beta in Dagster 1.13; we rely on them
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _daily_bars_asset(partitions)


def _daily_bars_asset(partitions: dg.MultiPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=DAILY_BARS,
        group_name=INGESTION_GROUP,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=bar_check_specs(DAILY_BARS),
        kinds={"parquet"},
    )
    def daily_bars(
        context: dg.AssetExecutionContext, market_data: MarketDataSource, storage: StorageResource
    ) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
        """Daily OHLCV bars per symbol, validated, in the hive-partitioned Parquet dataset."""
        calendar = market_data.session_calendar()
        selector = market_data.selector
        root = storage.data_root
        tally = QualityTally()
        rows = added = replaced = quarantined = superseded = sessions = 0
        for day, symbol in _keys(context, partitions):
            fetched = market_data.fetch(symbol, day)
            superseded += fetched.superseded
            checked = split_valid(
                fetched.table, calendar=calendar, source=fetched.sources, symbol=symbol
            )
            where = f"{symbol} {day.isoformat()}"
            if checked.good.num_rows:
                write = write_partition(root, selector, symbol, day, checked.good)
                added += write.added
                replaced += write.replaced
                stored = write.table
            else:
                stored = read_partition(root, selector, symbol, day)
            write_quarantine(root, selector, symbol, day, checked.rejected)
            quarantined += checked.rejected.num_rows
            tally.add_quarantined(checked.rejected, where)
            rows += stored.num_rows
            tally.add_stored(stored, where)
            if calendar.is_session(day):
                sessions += 1
                if stored.num_rows == 0:
                    tally.add_gaps([(symbol, day)])
        if tally.failed:
            context.log.warning(f"bar checks failing: {', '.join(tally.failed)}")
        yield dg.MaterializeResult(
            metadata={
                "selector": selector,
                "source": market_data.describe(),
                "partitions": len(context.partition_keys),
                "sessions": sessions,
                "rows_stored": rows,
                "rows_added": added,
                "rows_replaced": replaced,
                "rows_quarantined": quarantined,
                "rows_superseded": superseded,
                "dataset": dg.MetadataValue.path(f"{root}/selector={selector}"),
            }
        )
        yield from tally.results(DAILY_BARS)

    return daily_bars
