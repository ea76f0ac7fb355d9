"""Session calendars: weekends, NYSE holidays by rule, neighbours."""

from __future__ import annotations

from datetime import date

import pytest

from virtufin.errors import ConfigError
from virtufin.marketdata import SessionCalendar
from virtufin.marketdata.calendar import xnys_holidays


def test_xnys_2024_holidays_match_the_exchange_calendar() -> None:
    assert sorted(xnys_holidays(2024)) == [
        date(2024, 1, 1),
        date(2024, 1, 15),
        date(2024, 2, 19),
        date(2024, 3, 29),
        date(2024, 5, 27),
        date(2024, 6, 19),
        date(2024, 7, 4),
        date(2024, 9, 2),
        date(2024, 11, 28),
        date(2024, 12, 25),
    ]


def test_observed_holidays_move_off_weekends() -> None:
    assert date(2021, 7, 5) in xnys_holidays(2021)  # July 4th 2021 was a Sunday
    assert date(2022, 12, 26) in xnys_holidays(2022)  # Christmas 2022 was a Sunday
    assert date(2021, 12, 31) not in xnys_holidays(2021)  # Jan 1st 2022 (Sat): no Friday close


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
