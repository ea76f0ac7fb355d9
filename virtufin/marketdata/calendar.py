"""Session calendars: which dates a market trades, so generators skip them and checks find gaps.

Three calendars, by name:

| name       | sessions                                                              |
|------------|-----------------------------------------------------------------------|
| `xnys`     | weekdays minus the NYSE full-day closures: the holidays by rule (any  |
|            | year) and the table of unscheduled closures `XNYS_SPECIAL_CLOSURES`   |
| `weekdays` | Monday to Friday                                                      |
| `always`   | every day (crypto)                                                    |

The `xnys` rules (NYSE Rule 7.2 and its history), exact from 1971 (`XNYS_EXACT_FROM`; earlier
years get the same rules, which is not what the exchange did):

- New Year's Day, Washington's Birthday (3rd Monday of February), Good Friday, Memorial Day
  (last Monday of May), Independence Day, Labor Day (1st Monday of September), Thanksgiving
  (4th Thursday of November), Christmas Day; Martin Luther King Jr. Day (3rd Monday of
  January) from 1998; Juneteenth (June 19) from 2022; Election Day (the Tuesday after the
  1st Monday of November) in the presidential election years 1972, 1976 and 1980;
- a holiday on a Sunday closes the Monday after; one on a Saturday closes the Friday before,
  unless that Friday ends a month (the rule's accounting-period exception), so a Saturday
  New Year's Day closes nothing;
- `XNYS_SPECIAL_CLOSURES`: days the exchange closed outside its rules (national days of
  mourning, September 11, hurricanes, the 1977 blackout). A future closure of that kind is
  added to this table when the exchange announces it.

This calendar has dates, not hours: early closes (1 p.m. on the day before Independence Day, the
day after Thanksgiving, Christmas Eve) are sessions like any other, with one daily bar.

Example:
    >>> cal = SessionCalendar.named("xnys")
    >>> cal.is_session(date(2024, 7, 4)), cal.is_session(date(2024, 7, 5))
    (False, True)
    >>> cal.is_session(date(2012, 10, 29))  # Hurricane Sandy
    False
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from functools import lru_cache
from types import MappingProxyType
from typing import Final, Literal

from virtufin.errors import ConfigError

__all__ = [
    "CALENDAR_NAMES",
    "XNYS_EXACT_FROM",
    "XNYS_SPECIAL_CLOSURES",
    "CalendarName",
    "SessionCalendar",
    "xnys_holidays",
    "xnys_regular_holidays",
]

CalendarName = Literal["xnys", "weekdays", "always"]
CALENDAR_NAMES: Final[tuple[CalendarName, ...]] = ("xnys", "weekdays", "always")

XNYS_EXACT_FROM: Final = date(1971, 1, 1)
"""The first day from which `xnys` is the NYSE's own calendar (the Monday holidays of 1971)."""

XNYS_SPECIAL_CLOSURES: Final[Mapping[date, str]] = MappingProxyType(
    {
        date(1972, 12, 28): "day of mourning: Harry S. Truman",
        date(1973, 1, 25): "day of mourning: Lyndon B. Johnson",
        date(1977, 7, 14): "New York City blackout",
        date(1985, 9, 27): "Hurricane Gloria",
        date(1994, 4, 27): "day of mourning: Richard Nixon",
        date(2001, 9, 11): "September 11 attacks",
        date(2001, 9, 12): "September 11 attacks",
        date(2001, 9, 13): "September 11 attacks",
        date(2001, 9, 14): "September 11 attacks",
        date(2004, 6, 11): "day of mourning: Ronald Reagan",
        date(2007, 1, 2): "day of mourning: Gerald Ford",
        date(2012, 10, 29): "Hurricane Sandy",
        date(2012, 10, 30): "Hurricane Sandy",
        date(2018, 12, 5): "day of mourning: George H. W. Bush",
        date(2025, 1, 9): "day of mourning: Jimmy Carter",
    }
)
"""NYSE full-day closures outside the holiday rules since `XNYS_EXACT_FROM`, with the reason."""


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The n-th (1-based) `weekday` (Mon=0) of a month; n=-1 is the last."""
    if n > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    last = date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _easter(year: int) -> date:
    """Gregorian Easter Sunday (the anonymous Meeus/Jones/Butcher algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    ell = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * ell) // 451
    month = (h + ell - 7 * m + 114) // 31
    day = (h + ell - 7 * m + 114) % 31 + 1
    return date(year, month, day)


def _observed(day: date) -> date | None:
    """The weekday the exchange closes for a holiday on `day` (NYSE Rule 7.2).

    Sunday moves to Monday; Saturday to the Friday before, unless that Friday ends a month
    (the rule's accounting-period exception: a Saturday New Year's Day closes nothing).
    """
    if day.weekday() == 6:
        return day + timedelta(days=1)
    if day.weekday() == 5:
        friday = day - timedelta(days=1)
        return friday if friday.month == day.month else None
    return day


@lru_cache(maxsize=512)
def xnys_regular_holidays(year: int) -> frozenset[date]:
    """NYSE full-day holidays of `year` by rule (the dates the exchange closes for them)."""
    fixed = [date(year, 1, 1), date(year, 7, 4), date(year, 12, 25)]
    if year >= 2022:
        fixed.append(date(year, 6, 19))  # Juneteenth National Independence Day
    days = {d for d in map(_observed, fixed) if d is not None}
    days |= {
        _nth_weekday(year, 2, 0, 3),  # Washington's Birthday
        _easter(year) - timedelta(days=2),  # Good Friday
        _nth_weekday(year, 5, 0, -1),  # Memorial Day
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving Day
    }
    if year >= 1998:
        days.add(_nth_weekday(year, 1, 0, 3))  # Martin Luther King, Jr. Day
    if 1972 <= year <= 1980 and year % 4 == 0:
        days.add(_nth_weekday(year, 11, 0, 1) + timedelta(days=1))  # Election Day
    return frozenset(days)


@lru_cache(maxsize=512)
def xnys_holidays(year: int) -> frozenset[date]:
    """Every NYSE full-day closure of `year` on a weekday: the rules plus the special closures."""
    special = {d for d in XNYS_SPECIAL_CLOSURES if d.year == year}
    return xnys_regular_holidays(year) | special


class SessionCalendar:
    """A trading calendar: `is_session`, `sessions` between two dates, neighbours.

    Args:
        name: `xnys`, `weekdays` or `always`.

    Raises:
        ConfigError: an unknown name.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if name not in CALENDAR_NAMES:
            raise ConfigError("market data", "calendar", f"{name!r} is not one of {CALENDAR_NAMES}")
        self.name = name

    @classmethod
    def named(cls, name: str) -> SessionCalendar:
        """The calendar called `name` (cached instances are cheap; this builds a new one)."""
        return cls(name)

    def __repr__(self) -> str:
        return f"SessionCalendar({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionCalendar) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def is_session(self, day: date) -> bool:
        """Whether the market trades on `day`."""
        if self.name == "always":
            return True
        if day.weekday() >= 5:
            return False
        return self.name == "weekdays" or day not in xnys_holidays(day.year)

    def sessions(self, start: date, end: date) -> list[date]:
        """Every session in ``[start, end]`` (inclusive), in order."""
        return list(self.iter_sessions(start, end))

    def iter_sessions(self, start: date, end: date) -> Iterator[date]:
        day = start
        one = timedelta(days=1)
        while day <= end:
            if self.is_session(day):
                yield day
            day += one

    def previous_session(self, day: date) -> date:
        """The last session strictly before `day`."""
        day -= timedelta(days=1)
        while not self.is_session(day):
            day -= timedelta(days=1)
        return day

    def next_session(self, day: date) -> date:
        """The first session strictly after `day`."""
        day += timedelta(days=1)
        while not self.is_session(day):
            day += timedelta(days=1)
        return day
