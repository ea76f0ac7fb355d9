"""Clocks a worker reads through `WorkerContext.now()`: wall time live, event time in backtests.

The host picks the clock per event: with ``clocktype=historical`` on the input the clock reads
that event's ``eventtime`` (so a backtest is deterministic), otherwise the wall clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from virtufin.envelope import ClockType

__all__ = ["EPOCH", "Clock", "HistoricalClock", "WallClock"]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class Clock:
    """Base class of clocks.

    | method | required | notes                                  |
    |--------|----------|----------------------------------------|
    | now    | yes      | timezone-aware UTC `datetime`          |
    """

    clocktype: ClockType = "wall"

    def now(self) -> datetime:
        raise NotImplementedError("Clock.now")


class WallClock(Clock):
    """The machine's clock, in UTC."""

    clocktype: ClockType = "wall"

    def now(self) -> datetime:
        return datetime.now(UTC)


class HistoricalClock(Clock):
    """A replay clock: reads whatever time the host last `set` (the current event's time).

    Example:
        >>> clock = HistoricalClock()
        >>> clock.set(datetime(2024, 1, 2, tzinfo=UTC))
        >>> clock.now().isoformat()
        '2024-01-02T00:00:00+00:00'
    """

    clocktype: ClockType = "historical"

    def __init__(self, start: datetime = EPOCH) -> None:
        self._now = start

    def set(self, when: datetime) -> None:
        """Move the clock to `when` (the host calls this before each event)."""
        self._now = when

    def now(self) -> datetime:
        return self._now
