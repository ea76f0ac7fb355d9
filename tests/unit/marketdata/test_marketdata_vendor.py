"""Vendor drop files: backtesting.py CSVs, lower-case layouts, epoch ms, Parquet, symbol columns."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from virtufin.errors import ConfigError
from virtufin.marketdata import BAR_SCHEMA, DropFolder, read_vendor_file

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "GOOG.csv"


def test_backtesting_py_layout_labels_the_bar_start() -> None:
    table = read_vendor_file(FIXTURE)
    assert table.schema == BAR_SCHEMA
    first = table.slice(0, 1).to_pylist()[0]
    assert first["ts"] == datetime(2004, 8, 20, tzinfo=UTC)  # Date 2004-08-19 + 1d
    assert (first["symbol"], first["interval"], first["close"]) == ("GOOG", "1d", 100.34)


def test_lower_case_epoch_milliseconds_and_a_ts_close_column(tmp_path: Path) -> None:
    ms = tmp_path / "BTC.csv"
    ms.write_text(
        "timestamp,open,high,low,close,volume\n1704067200000,1,2,0.5,1.5,10\n1704070800000,1.5,2,1,1.8,12\n"
    )
    table = read_vendor_file(ms)
    assert table.column("interval").to_pylist() == ["1h", "1h"]
    assert table.column("ts").to_pylist()[0] == datetime(2024, 1, 1, 1, tzinfo=UTC)
    close = tmp_path / "ETH.csv"
    close.write_text("ts,Open,High,Low,Close\n2024-01-01T01:00:00Z,1,2,0.5,1.5\n")
    [row] = read_vendor_file(close, interval="1h").to_pylist()
    assert row["ts"] == datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert row["volume"] == 0.0


def test_parquet_with_a_symbol_column_feeds_several_symbols(tmp_path: Path) -> None:
    pq.write_table(
        pa.table(
            {
                "datetime": pa.array(  # naive: taken as UTC
                    ["2024-01-02T00:00:00", "2024-01-02T00:00:00"], pa.string()
                ),
                "ticker": ["AAA", "BBB"],
                "open": [1.0, 2.0],
                "high": [1.5, 2.5],
                "low": [0.5, 1.5],
                "close": [1.2, 2.2],
                "volume": [5.0, 6.0],
            }
        ),
        tmp_path / "bars_2024.parquet",
    )
    drop = DropFolder(tmp_path, interval="1d")
    assert drop.rows("BBB", date(2024, 1, 2)).table.column("close").to_pylist() == [2.2]
    assert drop.partitions() == {("AAA", date(2024, 1, 2)), ("BBB", date(2024, 1, 2))}


def test_a_later_file_supersedes_the_same_bar(tmp_path: Path) -> None:
    old = tmp_path / "AAA.csv"
    old.write_text(
        "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,10\n2024-01-03,1.5,2,1,1.8,12\n"
    )
    new = tmp_path / "AAA_fix.csv"
    new.write_text("Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.6,10\n")
    os.utime(new, ns=(old.stat().st_atime_ns, old.stat().st_mtime_ns + 1_000_000_000))
    rows = DropFolder(tmp_path).rows("AAA", date(2024, 1, 2))
    assert rows.table.column("close").to_pylist() == [1.6]
    assert rows.sources == [str(new)]
    assert rows.superseded == 1
    cursor = old.stat().st_mtime_ns
    assert DropFolder(tmp_path).partitions(modified_after_ns=cursor) == {("AAA", date(2024, 1, 2))}


def test_a_file_without_time_or_prices_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "X.csv"
    bad.write_text("when,price\n1,2\n")
    with pytest.raises(ConfigError, match="no ts, date"):
        read_vendor_file(bad)
