"""Session calendars: weekends, NYSE holidays by rule, special closures, neighbours."""

from __future__ import annotations

import warnings
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from virtufin.errors import ConfigError
from virtufin.marketdata import BAR_SCHEMA, SessionCalendar, missing_sessions, split_valid
from virtufin.marketdata.calendar import (
    XNYS_EXACT_FROM,
    XNYS_SPECIAL_CLOSURES,
    xnys_holidays,
    xnys_regular_holidays,
)

XNYS = SessionCalendar("xnys")


def _d(*days: str) -> list[date]:
    return [date.fromisoformat(d) for d in days]


# The NYSE's own holiday lists (weekday closures, observed dates, special closures included).
KNOWN_XNYS_CLOSURES: dict[int, list[date]] = {
    2000: _d("2000-01-17", "2000-02-21", "2000-04-21", "2000-05-29", "2000-07-04", "2000-09-04",
             "2000-11-23", "2000-12-25"),  # Jan 1 2000 a Saturday: Dec 31 1999 traded
    2001: _d("2001-01-01", "2001-01-15", "2001-02-19", "2001-04-13", "2001-05-28", "2001-07-04",
             "2001-09-03", "2001-09-11", "2001-09-12", "2001-09-13", "2001-09-14", "2001-11-22",
             "2001-12-25"),
    2004: _d("2004-01-01", "2004-01-19", "2004-02-16", "2004-04-09", "2004-05-31", "2004-06-11",
             "2004-07-05", "2004-09-06", "2004-11-25", "2004-12-24"),
    2007: _d("2007-01-01", "2007-01-02", "2007-01-15", "2007-02-19", "2007-04-06", "2007-05-28",
             "2007-07-04", "2007-09-03", "2007-11-22", "2007-12-25"),
    2012: _d("2012-01-02", "2012-01-16", "2012-02-20", "2012-04-06", "2012-05-28", "2012-07-04",
             "2012-09-03", "2012-10-29", "2012-10-30", "2012-11-22", "2012-12-25"),
    2018: _d("2018-01-01", "2018-01-15", "2018-02-19", "2018-03-30", "2018-05-28", "2018-07-04",
             "2018-09-03", "2018-11-22", "2018-12-05", "2018-12-25"),
    2021: _d("2021-01-01", "2021-01-18", "2021-02-15", "2021-04-02", "2021-05-31", "2021-07-05",
             "2021-09-06", "2021-11-25", "2021-12-24"),
    2022: _d("2022-01-17", "2022-02-21", "2022-04-15", "2022-05-30", "2022-06-20", "2022-07-04",
             "2022-09-05", "2022-11-24", "2022-12-26"),
    2024: _d("2024-01-01", "2024-01-15", "2024-02-19", "2024-03-29", "2024-05-27", "2024-06-19",
             "2024-07-04", "2024-09-02", "2024-11-28", "2024-12-25"),
    2025: _d("2025-01-01", "2025-01-09", "2025-01-20", "2025-02-17", "2025-04-18", "2025-05-26",
             "2025-06-19", "2025-07-04", "2025-09-01", "2025-11-27", "2025-12-25"),
    2026: _d("2026-01-01", "2026-01-19", "2026-02-16", "2026-04-03", "2026-05-25", "2026-06-19",
             "2026-07-03", "2026-09-07", "2026-11-26", "2026-12-25"),
    2027: _d("2027-01-01", "2027-01-18", "2027-02-15", "2027-03-26", "2027-05-31", "2027-06-18",
             "2027-07-05", "2027-09-06", "2027-11-25", "2027-12-24"),
}  # fmt: skip


def _weekdays(start: date, end: date) -> list[date]:
    days = (start + timedelta(days=i) for i in range((end - start).days + 1))
    return [d for d in days if d.weekday() < 5]


@pytest.mark.parametrize("year", sorted(KNOWN_XNYS_CLOSURES))
def test_xnys_closures_match_the_exchanges_published_lists(year: int) -> None:
    assert sorted(xnys_holidays(year)) == KNOWN_XNYS_CLOSURES[year]
    weekdays = _weekdays(date(year, 1, 1), date(year, 12, 31))
    expected = [d for d in weekdays if d not in KNOWN_XNYS_CLOSURES[year]]
    assert XNYS.sessions(date(year, 1, 1), date(year, 12, 31)) == expected


def test_session_counts_of_known_years() -> None:
    counts = {y: len(XNYS.sessions(date(y, 1, 1), date(y, 12, 31))) for y in (2001, 2012, 2024)}
    assert counts == {2001: 248, 2012: 250, 2024: 252}


def test_xnys_equals_exchange_calendars_from_1971_to_2099() -> None:
    """Cross-check against the `exchange_calendars` package (a dev dependency, tests only)."""
    xc = pytest.importorskip("exchange_calendars")
    with warnings.catch_warnings():  # its own use of pandas (Series.values on tz-aware data)
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        theirs = xc.get_calendar("XNYS", start="1971-01-01", end="2099-12-31")
        expected = [ts.date() for ts in theirs.sessions]
    first, last = expected[0], expected[-1]
    assert first == XNYS.next_session(XNYS_EXACT_FROM - timedelta(days=1))
    assert XNYS.sessions(first, last) == expected
    sessions = set(expected)
    closed = [d for d in _weekdays(first, last) if d not in sessions]
    ours = sorted(d for y in range(1971, 2100) for d in xnys_holidays(y) if first <= d <= last)
    assert closed == ours


def test_special_closures_are_not_sessions_and_neighbours_skip_them() -> None:
    assert all(not XNYS.is_session(d) for d in XNYS_SPECIAL_CLOSURES)
    assert all(d.weekday() < 5 for d in XNYS_SPECIAL_CLOSURES)
    assert not any(d in xnys_regular_holidays(d.year) for d in XNYS_SPECIAL_CLOSURES)
    assert XNYS.sessions(date(2012, 10, 26), date(2012, 10, 31)) == _d("2012-10-26", "2012-10-31")
    assert XNYS.next_session(date(2012, 10, 26)) == date(2012, 10, 31)  # Hurricane Sandy
    assert XNYS.previous_session(date(2001, 9, 17)) == date(2001, 9, 10)  # September 11
    assert XNYS.next_session(date(2006, 12, 29)) == date(2007, 1, 3)  # New Year, Ford
    for day in _d("2004-06-11", "2018-12-05", "2025-01-09"):
        assert not XNYS.is_session(day)
        assert SessionCalendar("weekdays").is_session(day)


def test_the_holiday_rules_and_their_history() -> None:
    # a Sunday holiday closes the Monday after, a Saturday one the Friday before ...
    assert date(2021, 7, 5) in xnys_holidays(2021)
    assert date(2022, 12, 26) in xnys_holidays(2022)
    assert date(2026, 7, 3) in xnys_holidays(2026)
    assert date(2027, 6, 18) in xnys_holidays(2027)  # Juneteenth on a Saturday
    # ... unless that Friday ends a month: a Saturday New Year's Day closes nothing
    for friday in _d("1999-12-31", "2004-12-31", "2010-12-31", "2021-12-31", "2027-12-31"):
        assert XNYS.is_session(friday)
    # Juneteenth from 2022, MLK Day from 1998, Election Day in 1972-1980 presidential years
    assert XNYS.is_session(date(2021, 6, 18))
    assert not XNYS.is_session(date(2022, 6, 20))
    assert XNYS.is_session(date(1997, 1, 20))
    assert not XNYS.is_session(date(1998, 1, 19))
    assert not XNYS.is_session(date(1980, 11, 4))
    assert XNYS.is_session(date(1984, 11, 6))
    assert XNYS.is_session(date(1978, 11, 7))
    # Good Friday every year, early-close days are sessions
    assert not XNYS.is_session(date(2015, 4, 3))
    assert not XNYS.is_session(date(2021, 4, 2))
    for early in _d("2024-07-03", "2024-11-29", "2024-12-24", "2025-12-24"):
        assert XNYS.is_session(early)


def test_2024_has_252_xnys_sessions_and_weekends_are_never_sessions() -> None:
    cal = SessionCalendar("xnys")
    assert len(cal.sessions(date(2024, 1, 1), date(2024, 12, 31))) == 252
    assert not cal.is_session(date(2024, 1, 6))
    assert SessionCalendar("weekdays").is_session(date(2024, 7, 4))
    assert SessionCalendar("always").is_session(date(2024, 1, 6))


def test_neighbouring_sessions_skip_weekends_and_holidays() -> None:
    cal = SessionCalendar("xnys")
    assert cal.next_session(date(2024, 3, 28)) == date(2024, 4, 1)  # Good Friday, weekend
    assert cal.previous_session(date(2024, 1, 16)) == date(2024, 1, 12)  # MLK day, weekend


def test_an_unknown_calendar_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="calendar"):
        SessionCalendar("xlon")


def _vendor_bars(symbol: str, traded: list[date]) -> pa.Table:
    """Daily bars as a vendor delivers them: one per day the exchange traded, nothing else."""
    rows = []
    for i, day in enumerate(traded):
        close = 100.0 + i
        rows.append(
            {
                "ts": datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1),
                "open": close - 0.5,
                "high": close + 1.0,
                "low": close - 1.0,
                "close": close,
                "volume": 1000.0 + i,
                "symbol": symbol,
                "interval": "1d",
            }
        )
    return pa.Table.from_pylist(rows, schema=BAR_SCHEMA)


# (first, last, the weekdays the NYSE was closed in between), written out by hand
EXCEPTIONAL_WINDOWS = [
    (date(2001, 8, 27), date(2001, 9, 28), _d("2001-09-03", *(f"2001-09-1{i}" for i in "1234"))),
    (date(2004, 6, 1), date(2004, 6, 30), _d("2004-06-11")),
    (date(2006, 12, 18), date(2007, 1, 19), _d("2006-12-25", "2007-01-01", "2007-01-02",
                                               "2007-01-15")),
    (date(2012, 10, 15), date(2012, 11, 9), _d("2012-10-29", "2012-10-30")),
    (date(2018, 11, 26), date(2018, 12, 14), _d("2018-12-05")),
    (date(2024, 12, 16), date(2025, 1, 31), _d("2024-12-25", "2025-01-01", "2025-01-09",
                                               "2025-01-20")),
]  # fmt: skip


@pytest.mark.parametrize(("start", "end", "closed"), EXCEPTIONAL_WINDOWS)
def test_a_gap_check_over_real_shaped_data_around_exceptional_closures_finds_no_gap(
    start: date, end: date, closed: list[date]
) -> None:
    traded = [d for d in _weekdays(start, end) if d not in closed]
    table = pa.concat_tables([_vendor_bars(s, traded) for s in ("AAA", "BBB")])
    assert missing_sessions(table, XNYS, ["AAA", "BBB"], start, end) == []
    for symbol in ("AAA", "BBB"):
        own = table.filter(pc.equal(table.column("symbol"), symbol))
        checked = split_valid(own, calendar=XNYS, source="vendor", symbol=symbol)
        assert checked.rejected.num_rows == 0
        assert checked.good.num_rows == len(traded)
    # the calendar still catches a real hole and a bar dated on a closure
    holed = table.filter(pc.not_equal(table.column("ts"), table.column("ts")[3]))
    assert len(missing_sessions(holed, XNYS, ["AAA", "BBB"], start, end)) == 2
    extra = _vendor_bars("AAA", [closed[-1]])
    assert split_valid(extra, calendar=XNYS, source="v", symbol="AAA").rejected.num_rows == 1
