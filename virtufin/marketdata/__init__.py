"""Market data without a framework: generate, read, validate, store and record OHLCV bars.

- `SyntheticGenerator`: seeded, realistic daily bars (the embedded default source);
- `DropFolder` / `read_vendor_file`: CSV and Parquet files in common vendor layouts;
- `write_partition` / `read_range`: the hive-partitioned Parquet dataset (zstd, atomic,
  idempotent merges of late and out-of-order rows);
- `split_valid`: row validation; rejects go to the quarantine with a reason;
- `BarRecorder`: appends live ``act.exchange.>`` candles from a bus to a dataset;
- `SessionCalendar`: which dates are sessions.

The Dagster assets in ``pipelines/ingestion`` are thin wrappers over these.
"""

from virtufin.marketdata.calendar import CALENDAR_NAMES, CalendarName, SessionCalendar
from virtufin.marketdata.dataset import (
    COMPRESSION,
    PARQUET_OPTIONS,
    PartitionWrite,
    list_partitions,
    partition_dir,
    quarantine_dir,
    read_partition,
    read_quarantine,
    read_range,
    write_partition,
    write_quarantine,
)
from virtufin.marketdata.recorder import LIVE_BARS_PATTERN, RECORDED_SELECTOR, BarRecorder
from virtufin.marketdata.schema import (
    BAR_SCHEMA,
    DEFAULT_INTERVAL,
    DEFAULT_SELECTOR,
    QUARANTINE_DIR,
    QUARANTINE_SCHEMA,
    empty_bars,
    interval_delta,
    session_date,
)
from virtufin.marketdata.synthetic import SYNTH_EPOCH, SyntheticGenerator
from virtufin.marketdata.validation import (
    CATEGORIES,
    Validated,
    count_by_category,
    count_duplicates,
    count_non_monotonic,
    count_ohlc_violations,
    missing_sessions,
    schema_differences,
    split_valid,
)
from virtufin.marketdata.vendor import DropFolder, read_vendor_file

__all__ = [
    "BAR_SCHEMA",
    "CALENDAR_NAMES",
    "CATEGORIES",
    "COMPRESSION",
    "DEFAULT_INTERVAL",
    "DEFAULT_SELECTOR",
    "LIVE_BARS_PATTERN",
    "PARQUET_OPTIONS",
    "QUARANTINE_DIR",
    "QUARANTINE_SCHEMA",
    "RECORDED_SELECTOR",
    "SYNTH_EPOCH",
    "BarRecorder",
    "CalendarName",
    "DropFolder",
    "PartitionWrite",
    "SessionCalendar",
    "SyntheticGenerator",
    "Validated",
    "count_by_category",
    "count_duplicates",
    "count_non_monotonic",
    "count_ohlc_violations",
    "empty_bars",
    "interval_delta",
    "list_partitions",
    "missing_sessions",
    "partition_dir",
    "quarantine_dir",
    "read_partition",
    "read_quarantine",
    "read_range",
    "read_vendor_file",
    "schema_differences",
    "session_date",
    "split_valid",
    "write_partition",
    "write_quarantine",
]
