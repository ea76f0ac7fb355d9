"""Bar sources: backtesting.py CSVs as they are, the hive dataset layout, the k-way merge."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from virtufin.backtest.data import (
    BAR_SCHEMA,
    FileBars,
    HiveDataset,
    format_interval,
    merge_by_time,
    open_source,
    parse_interval,
)
from virtufin.backtest.testkit import synthetic_bars
from virtufin.errors import ConfigError

GOOG = Path(__file__).resolve().parents[2] / "fixtures" / "GOOG.csv"
DAY_US = 86_400_000_000


def _ts(table: pa.Table) -> list[int]:
    return pc.cast(table.column("ts"), pa.int64()).to_pylist()


def test_backtesting_py_csv_is_read_as_is() -> None:
    source = FileBars(GOOG)
    batches = list(source.batches(500))
    assert all(b.schema == BAR_SCHEMA for b in batches)
    assert max(b.num_rows for b in batches) <= 500
    assert sum(b.num_rows for b in batches) == 2148
    table = pa.Table.from_batches(batches)
    first = table.slice(0, 1).to_pylist()[0]
    assert first["symbol"] == "GOOG"
    assert first["interval"] == "1d"
    assert first["open"] == 100.0
    assert first["close"] == 100.34
    assert first["volume"] == 22_351_900.0
    # Date labels the bar's start: ts (the close) is one interval later.
    assert first["ts"].isoformat() == "2004-08-20T00:00:00+00:00"
    assert source.selector == "GOOG"


def _write_dataset(root: Path, selector: str, tables: dict[str, pa.Table]) -> None:
    for symbol, table in tables.items():
        days = (np.asarray(_ts(table)) - 1) // DAY_US
        for day in np.unique(days):
            part = table.filter(pa.array(days == day))
            label = date.fromordinal(date(1970, 1, 1).toordinal() + int(day)).isoformat()
            folder = root / f"selector={selector}" / f"symbol={symbol}" / f"date={label}"
            folder.mkdir(parents=True)
            pq.write_table(part, folder / "part-0.parquet", compression="zstd")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    hourly = 3_600
    _write_dataset(
        tmp_path,
        "EQ_TEST",
        {
            "AAA": synthetic_bars(100, symbol="AAA", interval_secs=hourly, seed=1),
            "BBB": synthetic_bars(100, symbol="BBB", interval_secs=hourly, seed=2),
            "CCC": synthetic_bars(50, symbol="CCC", interval_secs=2 * hourly, seed=3),
        },
    )
    return tmp_path


def test_hive_dataset_merges_symbols_by_time(dataset: Path) -> None:
    source = HiveDataset(dataset, "EQ_TEST")
    assert source.symbols == ["AAA", "BBB", "CCC"]
    batches = list(source.batches(16))
    table = pa.Table.from_batches(batches)
    assert table.num_rows == 250
    ts = _ts(table)
    assert ts == sorted(ts)
    keys = list(zip(ts, table.column("symbol").to_pylist(), strict=True))
    assert keys == sorted(keys)  # ties resolve in symbol (stream) order
    assert max(b.num_rows for b in batches) <= 3 * 16  # one batch per stream at most


def test_hive_dataset_prunes_dates_and_symbols(dataset: Path) -> None:
    source = HiveDataset(dataset, "EQ_TEST", symbols=["BBB"], end=date(2020, 9, 14))
    table = pa.Table.from_batches(list(source.batches(1000)))
    assert set(table.column("symbol").to_pylist()) == {"BBB"}
    assert len(source.files("BBB")) == 2
    assert table.num_rows == 11 + 24  # 2020-09-13 from 13:26 (11 bars), then a whole day


def test_open_source_resolves_files_folders_and_selectors(
    dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(open_source(GOOG), FileBars)
    assert open_source(dataset).selector == "EQ_TEST"
    assert open_source(dataset / "selector=EQ_TEST").selector == "EQ_TEST"
    monkeypatch.setenv("VIRTUFIN_DATA_ROOT", str(dataset))
    assert open_source("EQ_TEST").describe().endswith("(AAA, BBB, CCC)")
    with pytest.raises(ConfigError, match="not in the dataset"):
        open_source("EQ_TEST", symbols=["ZZZ"])
    with pytest.raises(ConfigError, match="neither a data file"):
        open_source("no/such/thing.csv")


def test_parquet_file_in_either_layout(tmp_path: Path) -> None:
    ours = synthetic_bars(30)
    pq.write_table(ours, tmp_path / "syn.parquet")
    assert pa.Table.from_batches(list(FileBars(tmp_path / "syn.parquet").batches(7))).equals(ours)
    peer = pa.table(
        {
            "Date": pa.array([0, DAY_US], pa.timestamp("us")),
            "Open": [1.0, 2.0],
            "High": [1.5, 2.5],
            "Low": [0.5, 1.5],
            "Close": [1.2, 2.2],
        }
    )
    pq.write_table(peer, tmp_path / "peer.parquet")
    rows = pa.Table.from_batches(list(FileBars(tmp_path / "peer.parquet").batches(10)))
    assert _ts(rows) == [DAY_US, 2 * DAY_US]
    assert np.isnan(rows.column("volume").to_pylist()).all()


def test_merge_by_time_keeps_every_row_in_order() -> None:
    rng = np.random.default_rng(3)
    streams = []
    for k in range(4):
        ts = np.sort(rng.integers(0, 1_000, 200)) * 1_000_000
        table = pa.table({"ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "k": np.full(200, k)})
        streams.append(iter(table.to_batches(max_chunksize=int(rng.integers(5, 40)))))
    merged = pa.Table.from_batches(list(merge_by_time(streams)))
    assert merged.num_rows == 800
    keys = list(zip(_ts(merged), merged.column("k").to_pylist(), strict=True))
    assert [t for t, _ in keys] == sorted(t for t, _ in keys)


@pytest.mark.parametrize(
    ("text", "micros"),
    [("1m", 60_000_000), ("5m", 300_000_000), ("1d", DAY_US), ("1w", 7 * DAY_US)],
)
def test_intervals_round_trip(text: str, micros: int) -> None:
    assert parse_interval(text) == micros
    assert format_interval(micros) == text
