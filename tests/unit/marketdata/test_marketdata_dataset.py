"""The hive dataset writer: atomic, idempotent, merging late and out-of-order rows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from virtufin.marketdata import (
    BAR_SCHEMA,
    QUARANTINE_SCHEMA,
    list_partitions,
    partition_dir,
    read_partition,
    read_quarantine,
    write_partition,
    write_quarantine,
)
from virtufin.marketdata.dataset import _count_merge, _count_merge_rows, _dedupe_latest

DAY = date(2024, 1, 2)


def _bars(*rows: tuple[int, float]) -> pa.Table:
    """Hourly bars on DAY: (hour of close, close)."""
    return pa.Table.from_pylist(
        [
            {
                "ts": datetime(2024, 1, 2, hour, tzinfo=UTC),
                "open": close,
                "high": close + 1,
                "low": close - 1,
                "close": close,
                "volume": 10.0,
                "symbol": "AAA",
                "interval": "1h",
            }
            for hour, close in rows
        ],
        schema=BAR_SCHEMA,
    )


def test_the_layout_is_hive_partitioned_zstd_parquet(tmp_path: Path) -> None:
    write = write_partition(tmp_path, "SEL", "AAA", DAY, _bars((10, 1.0)))
    assert (
        write.path
        == tmp_path / "selector=SEL" / "symbol=AAA" / "date=2024-01-02" / "part-0.parquet"
    )
    columns = pq.ParquetFile(write.path).metadata.row_group(0)
    assert columns.column(1).compression == "ZSTD"
    dictionary = {
        columns.column(i).path_in_schema
        for i in range(columns.num_columns)
        if "RLE_DICTIONARY" in columns.column(i).encodings
    }
    assert dictionary == {"symbol", "interval"}  # `PARQUET_OPTIONS`: prices do not repeat
    assert list(list_partitions(tmp_path, "SEL")) == [("AAA", DAY)]
    assert partition_dir(tmp_path, "SEL", "AAA", DAY) == write.path.parent


def test_writing_the_same_rows_again_changes_nothing(tmp_path: Path) -> None:
    first = write_partition(tmp_path, "SEL", "AAA", DAY, _bars((10, 1.0), (11, 2.0)))
    mtime = first.path.stat().st_mtime_ns
    again = write_partition(tmp_path, "SEL", "AAA", DAY, _bars((11, 2.0), (10, 1.0)))
    assert (again.rows, again.added, again.replaced) == (2, 0, 0)
    assert first.path.stat().st_mtime_ns == mtime
    assert read_partition(tmp_path, "SEL", "AAA", DAY).num_rows == 2


def test_late_and_out_of_order_rows_merge_sorted_and_newest_wins(tmp_path: Path) -> None:
    write_partition(tmp_path, "SEL", "AAA", DAY, _bars((12, 3.0), (10, 1.0)))
    write = write_partition(tmp_path, "SEL", "AAA", DAY, _bars((11, 2.0), (12, 3.5)))
    assert (write.rows, write.added, write.replaced) == (3, 1, 1)
    stored = read_partition(tmp_path, "SEL", "AAA", DAY)
    assert stored.column("close").to_pylist() == [1.0, 2.0, 3.5]
    assert [p.name for p in write.path.parent.iterdir()] == ["part-0.parquet"]  # no temp left


def test_replace_keeps_only_the_new_rows(tmp_path: Path) -> None:
    write_partition(tmp_path, "SEL", "AAA", DAY, _bars((10, 1.0), (11, 2.0)))
    write = write_partition(tmp_path, "SEL", "AAA", DAY, _bars((11, 9.0)), replace=True)
    assert write.rows == 1
    assert read_partition(tmp_path, "SEL", "AAA", DAY).column("close").to_pylist() == [9.0]


def test_the_quarantine_holds_the_latest_rejects_and_a_clean_run_clears_it(
    tmp_path: Path,
) -> None:
    rejected = _bars((10, 1.0)).append_column("reason", pa.array(["ohlc_inconsistent"]))
    rejected = rejected.append_column("source", pa.array(["vendor.csv"]))
    path = write_quarantine(tmp_path, "SEL", "AAA", DAY, rejected)
    assert (
        path
        == tmp_path
        / "_quarantine"
        / "selector=SEL"
        / "symbol=AAA"
        / "date=2024-01-02"
        / "part-0.parquet"
    )
    assert read_quarantine(tmp_path, "SEL", "AAA", DAY).column("reason").to_pylist() == [
        "ohlc_inconsistent"
    ]
    assert write_quarantine(tmp_path, "SEL", "AAA", DAY, QUARANTINE_SCHEMA.empty_table()) is None
    assert read_quarantine(tmp_path, "SEL", "AAA", DAY).num_rows == 0
    assert list(list_partitions(tmp_path, "SEL")) == []  # the quarantine is not the dataset


def test_the_dataset_schema_is_the_one_the_backtest_engine_reads() -> None:
    from virtufin.backtest import BAR_SCHEMA as ENGINE_SCHEMA

    assert BAR_SCHEMA.equals(ENGINE_SCHEMA)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 23), st.sampled_from([1.0, 2.0, 3.0])), max_size=8),
    st.lists(st.tuples(st.integers(0, 23), st.sampled_from([1.0, 2.0, 3.0])), max_size=8),
)
def test_merge_counts_agree_with_a_row_by_row_comparison(
    stored: list[tuple[int, float]], late: list[tuple[int, float]]
) -> None:
    old, _ = _dedupe_latest(_bars(*stored), None)
    both = pa.concat_tables([old, _bars(*late)])
    rank = np.concatenate([np.full(old.num_rows, -1), np.arange(len(late))]).astype(np.int64)
    merged, _ = _dedupe_latest(both, rank)
    assert _count_merge(old, merged) == _count_merge_rows(old, merged)
