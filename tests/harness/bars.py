"""One daily candle as a market-data connector publishes it, for tests that feed live paths."""

from __future__ import annotations

from datetime import datetime

from virtufin.envelope import Envelope
from virtufin.topics import EventTypes


def candle(venue: str, symbol: str, close: float, when: datetime, *, source: str) -> Envelope:
    """A ``1d`` candle of `symbol` closing at `when` (open = close, high/low ±1) on act lanes."""
    return Envelope.new(
        type=EventTypes.market(venue, "ohlcv", "candle"),
        source=source,
        data={
            "symbol": symbol,
            "interval": "1d",
            "open": close,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": 1.0,
            "candle_close_time": when.isoformat().replace("+00:00", "Z"),
        },
        time=when,
        eventtime=when,
        clocktype="historical",
        marketlane="act",
    )
