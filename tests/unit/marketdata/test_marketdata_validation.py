"""Row validation: every reason, several reasons at once, categories for the checks."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from virtufin.marketdata import (
    BAR_SCHEMA,
    SessionCalendar,
    count_duplicates,
    count_non_monotonic,
    count_ohlc_violations,
    missing_sessions,
    schema_differences,
    split_valid,
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
