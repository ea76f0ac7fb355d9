"""Session calendars: which dates a market trades, so generators skip them and checks find gaps.

Three calendars, by name:

| name       | sessions                                                              |
|------------|-----------------------------------------------------------------------|
| `xnys`     | weekdays minus the NYSE full-day holidays (rules, not a table, so any  |
|            | year works): New Year, MLK, Presidents, Good Friday, Memorial,        |
|            | Juneteenth (2022+), Independence, Labor, Thanksgiving, Christmas      |
| `weekdays` | Monday to Friday                                                      |
| `always`   | every day (crypto)                                                    |

Early closes and one-off closures (national days of mourning) are not modelled.

Example:
    >>> cal = SessionCalendar.named("xnys")
    >>> cal.is_session(date(2024, 7, 4)), cal.is_session(date(2024, 7, 5))
    (False, True)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from functools import lru_cache
from typing import Final, Literal

from virtufin.errors import ConfigError

__all__ = ["CALENDAR_NAMES", "CalendarName", "SessionCalendar", "xnys_holidays"]

CalendarName = Literal["xnys", "weekdays", "always"]
CALENDAR_NAMES: Final[tuple[CalendarName, ...]] = ("xnys", "weekdays", "always")


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


def _observed(day: date) -> date:
    """Saturday holidays move to Friday, Sunday holidays to Monday."""
    if day.weekday() == 5:
        return day - timedelta(days=1)
    if day.weekday() == 6:
        return day + timedelta(days=1)
    return day


@lru_cache(maxsize=256)
def xnys_holidays(year: int) -> frozenset[date]:
    """NYSE full-day holidays of `year` (observed dates)."""
    days = {
        _nth_weekday(year, 1, 0, 3),  # Martin Luther King Jr. Day
        _nth_weekday(year, 2, 0, 3),  # Washington's Birthday
        _easter(year) - timedelta(days=2),  # Good Friday
        _nth_weekday(year, 5, 0, -1),  # Memorial Day
        _observed(date(year, 7, 4)),
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        _observed(date(year, 12, 25)),
    }
    new_year = date(year, 1, 1)
    if new_year.weekday() != 5:  # NYSE does not close on Friday Dec 31 for a Saturday Jan 1
        days.add(_observed(new_year))
    if year >= 2022:
        days.add(_observed(date(year, 6, 19)))
    return frozenset(days)


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
