"""Row validation: every reason, several reasons at once, categories for the checks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from unittest.mock import patch

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from virtufin.marketdata import (
    BAR_SCHEMA,
    SessionCalendar,
    count_duplicates,
    count_non_monotonic,
    count_ohlc_violations,
    missing_sessions,
    schema_differences,
    split_valid,
    validation,
)

CAL = SessionCalendar("xnys")


def _row(day: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ts": datetime(2024, 1, day + 1, tzinfo=UTC),  # daily bar of Jan <day>
        "open": 10.0,
        "high": 11.0,
        "low": 9.0,
        "close": 10.5,
        "volume": 100.0,
        "symbol": "AAA",
        "interval": "1d",
    }
    row.update(changes)
    return row


def _split(*rows: dict[str, Any]) -> tuple[list[Any], list[str]]:
    checked = split_valid(
        pa.Table.from_pylist(list(rows), schema=BAR_SCHEMA), calendar=CAL, source="f", symbol="AAA"
    )
    return checked.good.column("close").to_pylist(), checked.rejected.column("reason").to_pylist()


def test_good_rows_pass_sorted() -> None:
    good, rejected = _split(_row(3, close=10.7), _row(2, close=10.6))
    assert good == [10.6, 10.7]
    assert rejected == []


def test_each_rule_names_its_reason() -> None:
    cases = {
        "null_value": _row(2, close=None),
        "non_positive_price": _row(2, low=-1.0),
        "ohlc_inconsistent": _row(2, high=10.2),
        "negative_volume": _row(2, volume=-5.0),
        "off_session": _row(6),  # Saturday
        "symbol_mismatch": _row(2, symbol="BBB"),
    }
    for reason, row in cases.items():
        assert _split(row) == ([], [reason]), reason


def test_a_row_breaking_several_rules_lists_them_all() -> None:
    _, rejected = _split(_row(6, high=5.0, volume=-1.0))
    assert rejected == ["ohlc_inconsistent;negative_volume;off_session"]


def test_within_one_delivery_the_last_duplicate_wins_and_the_others_are_quarantined() -> None:
    good, rejected = _split(_row(2, close=10.1), _row(2, close=10.2))
    assert good == [10.2]
    assert rejected == ["duplicate_ts"]


def test_measures_of_stored_data() -> None:
    table = pa.Table.from_pylist([_row(3), _row(2), _row(2), _row(4, high=1.0)], schema=BAR_SCHEMA)
    assert count_non_monotonic(table) == 2
    assert count_duplicates(table) == 1
    assert count_ohlc_violations(table) == 1
    assert schema_differences(BAR_SCHEMA) == []
    assert schema_differences(BAR_SCHEMA.remove(5)) == ["missing column volume"]
    missing = missing_sessions(table, CAL, ["AAA"], date(2024, 1, 2), date(2024, 1, 8))
    assert [d.isoformat() for _, d in missing] == ["2024-01-05", "2024-01-08"]


_FAULTS = st.sampled_from(
    [
        {},
        {},
        {},
        {"close": None},
        {"open": float("nan")},
        {"low": -1.0},
        {"high": 9.5},
        {"low": 10.8},
        {"volume": -5.0},
        {"volume": None},
        {"symbol": "BBB"},
        {"symbol": None},
        {"interval": "1h"},
        {"ts": None},
    ]
)


@st.composite
def _deliveries(draw: st.DrawFn) -> pa.Table:
    """Daily bars over two weeks (weekends and a holiday included), in any order, with
    duplicates and each kind of fault now and then; often a clean run."""
    days = draw(st.lists(st.integers(1, 15), min_size=1, max_size=12))
    if draw(st.booleans()):
        days = sorted(set(d for d in days if date(2024, 1, d).weekday() < 5 and d != 1))
    faults = st.just({}) if draw(st.booleans()) else _FAULTS
    rows = [_row(d, **{"close": 10.0 + i / 100, **draw(faults)}) for i, d in enumerate(days)]
    table = pa.Table.from_pylist(rows or [_row(2)], schema=BAR_SCHEMA)
    cut = draw(st.integers(0, table.num_rows))  # several chunks, the first one empty
    return pa.concat_tables([table.slice(0, 0), table.slice(0, cut), table.slice(cut)])


@settings(max_examples=300, deadline=None)
@given(_deliveries(), st.sampled_from(["AAA", None]))
def test_the_clean_delivery_shortcut_agrees_with_the_rule_by_rule_pass(
    table: pa.Table, symbol: str | None
) -> None:
    fast = split_valid(table, calendar=CAL, source="f", symbol=symbol)
    with patch.object(validation, "_is_clean", lambda *_: False):
        full = split_valid(table, calendar=CAL, source="f", symbol=symbol)
    for mine, theirs in ((fast.good, full.good), (fast.rejected, full.rejected)):
        assert mine.schema.equals(theirs.schema)
        assert repr(mine.to_pylist()) == repr(theirs.to_pylist())  # NaN ≠ NaN for `equals`
    if validation._is_clean(table, CAL, symbol):
        assert full.rejected.num_rows == 0
        assert full.good.equals(table)  # nothing rejected, nothing reordered


def test_a_long_clean_delivery_passes_whole_and_one_bad_row_in_it_is_still_caught() -> None:
    start = datetime(2024, 1, 2, tzinfo=UTC)
    rows = [_row(1, ts=start + timedelta(minutes=m + 1), interval="1m") for m in range(5000)]
    table = pa.Table.from_pylist(rows, schema=BAR_SCHEMA)
    always = SessionCalendar("always")
    assert validation._is_clean(table, always, "AAA")
    assert split_valid(table, calendar=always, source="f", symbol="AAA").good is table
    rows[4321]["symbol"] = "BBB"
    table = pa.Table.from_pylist(rows, schema=BAR_SCHEMA)
    assert not validation._is_clean(table, always, None)
    checked = split_valid(table, calendar=always, source="f", symbol="AAA")
    assert checked.rejected.column("reason").to_pylist() == ["symbol_mismatch"]
    assert checked.good.num_rows == 4999
