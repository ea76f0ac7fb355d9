"""Ingestion with real Dagster: partitions, idempotence, quarantine, late data, schedule."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from conftest import END, START, SYMBOLS, Stack, ingest

from pipelines import build_defs
from pipelines.ingestion.partitions import Universe
from pipelines.ingestion.resources import DropFolderSource
from virtufin.errors import ConfigError
from virtufin.marketdata import (
    DEFAULT_SELECTOR,
    SessionCalendar,
    list_partitions,
    read_quarantine,
    read_range,
)


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    [event] = result.get_asset_materialization_events()[:1]
    materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
    return {k: v.value for k, v in materialization.metadata.items()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_range_of_partitions_lands_as_a_hive_dataset_one_bar_per_session(stack: Stack) -> None:
    root = stack.state_dir / "data"
    sessions = SessionCalendar("xnys").sessions(START, END)
    table = read_range(root, DEFAULT_SELECTOR, list(SYMBOLS), START, END)
    assert table.num_rows == len(sessions) * len(SYMBOLS)
    stored = set(list_partitions(root, DEFAULT_SELECTOR))
    assert stored == {(s, d) for s in SYMBOLS for d in sessions}
    some = next((root / f"selector={DEFAULT_SELECTOR}").rglob("*.parquet"))
    assert pq.ParquetFile(some).metadata.row_group(0).column(0).compression == "ZSTD"
    assert all(e.passed for e in _checks(stack.ingestion).values())
    meta = _metadata(stack.ingestion)
    assert meta["rows_quarantined"] == 0
    assert meta["sessions"] == len(sessions) * len(SYMBOLS)


def test_rematerialising_partitions_adds_no_duplicate_rows(stack: Stack) -> None:
    root = stack.state_dir / "data"
    before = read_range(root, DEFAULT_SELECTOR, list(SYMBOLS), START, END)
    again = stack.ingest(date(2024, 2, 1), date(2024, 2, 29))
    assert again.success
    meta = _metadata(again)
    assert meta["rows_added"] == 0
    assert meta["rows_replaced"] == 0
    after = read_range(root, DEFAULT_SELECTOR, list(SYMBOLS), START, END)
    assert after.equals(before)


def test_the_schedule_requests_yesterday_with_matching_partition_and_run_keys(
    stack: Stack,
) -> None:
    schedule = stack.defs.resolve_schedule_def("daily_bars_schedule")
    context = dg.build_schedule_context(
        instance=stack.instance,
        scheduled_execution_time=datetime(2024, 3, 5, 6, tzinfo=UTC),
        repository_def=stack.defs.get_repository_def(),
    )
    data = schedule.evaluate_tick(context)
    requests = list(data.run_requests or [])
    assert [r.partition_key for r in requests] == [f"2024-03-04|{s}" for s in SYMBOLS]
    assert all(r.run_key == r.partition_key for r in requests)
    partitions = stack.job("ingest_bars").partitions_def
    assert partitions is not None
    assert all(partitions.has_partition_key(r.partition_key) for r in requests)  # type: ignore[arg-type]


def _vendor_defs(stack: Stack, folder: Path) -> dg.Definitions:
    source = DropFolderSource(folder=str(folder), selector="VENDOR_BAD")
    resources = {**stack.resources, "market_data": source}
    return build_defs(
        universe=Universe(symbols=("BAD",), start_date=START.isoformat()),
        settings=stack.settings,
        resources=resources,
    )


def write_vendor_csv(folder: Path, *, bad_day: str = "2024-01-10") -> Path:
    """backtesting.py's layout for symbol BAD: Jan 2024 sessions, one bar with high < low."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["Date,Open,High,Low,Close,Volume"]
    price = 100.0
    for day in SessionCalendar("xnys").sessions(date(2024, 1, 2), date(2024, 1, 31)):
        close = price * (1.01 if day.day % 3 else 0.985)
        high, low = max(price, close) * 1.01, min(price, close) * 0.99
        if day.isoformat() == bad_day:
            high, low = low, high
        lines.append(f"{day},{price:.2f},{high:.2f},{low:.2f},{close:.2f},{1000 + day.day}")
        price = close
    path = folder / "BAD.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_vendor_rows_are_quarantined_with_a_reason_and_fail_the_check(
    stack: Stack, tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    write_vendor_csv(folder)
    defs = _vendor_defs(stack, folder)
    result = ingest(defs, stack.instance, date(2024, 1, 1), date(2024, 1, 31), ("BAD",))
    checks = _checks(result)
    assert not checks["ohlc_consistent"].passed
    assert checks["ohlc_consistent"].metadata["actual"].value == 1
    assert checks["ohlc_consistent"].metadata["threshold"].value == 0
    # the rejected bar leaves its session without a bar: the gap check says so too
    assert {name for name, e in checks.items() if not e.passed} == {
        "ohlc_consistent",
        "no_session_gaps",
    }
    assert "BAD 2024-01-10" in str(checks["no_session_gaps"].metadata["examples"].value)
    root = stack.state_dir / "data"
    rejected = read_quarantine(root, "VENDOR_BAD", "BAD", date(2024, 1, 10))
    assert rejected.column("reason").to_pylist() == ["ohlc_inconsistent"]
    assert rejected.column("source").to_pylist() == [str(folder / "BAD.csv")]
    kept = read_range(root, "VENDOR_BAD", ["BAD"], date(2024, 1, 1), date(2024, 1, 31))
    sessions = SessionCalendar("xnys").sessions(date(2024, 1, 2), date(2024, 1, 31))
    assert kept.num_rows == len(sessions) - 1


def test_late_corrected_deliveries_replace_rows_and_clear_the_quarantine(
    stack: Stack, tmp_path: Path
) -> None:
    folder = tmp_path / "drop"
    write_vendor_csv(folder, bad_day="2024-01-11")
    defs = _vendor_defs(stack, folder)
    first = ingest(defs, stack.instance, date(2024, 1, 2), date(2024, 1, 31), ("BAD",))
    assert not _checks(first)["ohlc_consistent"].passed
    sensor = defs.resolve_sensor_def("late_bars_sensor")
    source = DropFolderSource(folder=str(folder), selector="VENDOR_BAD")
    primed = sensor(
        dg.build_sensor_context(instance=stack.instance, resources={"market_data": source})
    )
    assert isinstance(primed, dg.SensorResult)
    # a correction arrives later: the same day, consistent, plus a revised close for Jan 12
    late = folder / "BAD_2024-01-fix.csv"
    late.write_text(
        "date,open,high,low,close,volume\n"
        "2024-01-11,101.0,103.0,100.0,102.0,1500\n"
        "2024-01-12,102.0,104.0,101.0,103.5,1600\n"
    )
    stat = late.stat()
    os.utime(late, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000_000))
    context = dg.build_sensor_context(
        instance=stack.instance, cursor=primed.cursor, resources={"market_data": source}
    )
    result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    keys = sorted(str(r.partition_key) for r in result.run_requests or [])
    assert keys == ["2024-01-11|BAD", "2024-01-12|BAD"]
    job = defs.resolve_job_def("ingest_bars")
    for key in keys:
        run = job.execute_in_process(instance=stack.instance, partition_key=key)
        assert run.success
    root = stack.state_dir / "data"
    assert read_quarantine(root, "VENDOR_BAD", "BAD", date(2024, 1, 11)).num_rows == 0
    fixed = read_range(root, "VENDOR_BAD", ["BAD"], date(2024, 1, 11), date(2024, 1, 12))
    assert fixed.column("close").to_pylist() == [102.0, 103.5]
    assert fixed.num_rows == 2


@pytest.mark.parametrize("symbol", ["A|B", "A,B", "A[1]"])
def test_symbols_that_would_break_partition_keys_are_refused(symbol: str) -> None:
    with pytest.raises(ConfigError, match="must match"):
        Universe(symbols=(symbol,))


def test_vendor_data_around_hurricane_sandy_shows_no_session_gap(
    stack: Stack, tmp_path: Path
) -> None:
    """Real-shaped data: bars on the days the NYSE traded, none on 2012-10-29/30 (closed)."""
    folder = tmp_path / "sandy"
    folder.mkdir()
    closed = {date(2012, 10, 29), date(2012, 10, 30)}
    lines = ["Date,Open,High,Low,Close,Volume"]
    day, traded = date(2012, 10, 15), 0
    while day <= date(2012, 11, 9):
        if day.weekday() < 5 and day not in closed:
            price = 140.0 + traded
            lines.append(f"{day},{price:.2f},{price + 1:.2f},{price - 1:.2f},{price + 0.5:.2f},900")
            traded += 1
        day += timedelta(days=1)
    (folder / "SPY.csv").write_text("\n".join(lines) + "\n")
    source = DropFolderSource(folder=str(folder), selector="VENDOR_SANDY")
    defs = build_defs(
        universe=Universe(symbols=("SPY",), start_date="2012-10-01"),
        settings=stack.settings,
        resources={**stack.resources, "market_data": source},
    )
    result = ingest(defs, stack.instance, date(2012, 10, 15), date(2012, 11, 9), ("SPY",))
    assert result.success
    checks = _checks(result)
    assert checks["no_session_gaps"].passed, checks["no_session_gaps"].metadata
    assert all(e.passed for e in checks.values())
    meta = _metadata(result)
    assert meta["sessions"] == traded == 18
    assert meta["rows_stored"] == traded
    assert meta["rows_quarantined"] == 0
