"""Venue frames → Virtufin's market-data payloads (docs/live.md has the mapping table).

A normaliser turns one inbound WebSocket frame into zero or more `MarketEvent`s: the topic
(built with `virtufin.topics`), the CloudEvent type, the payload of the published schema and
the event time. `BinanceNormalizer` understands Binance's spot streams, raw
(``{"e": "trade", …}``) or wrapped by a combined stream (``{"stream": …, "data": {…}}``):

- ``trade`` → ``act.exchange.<venue>.trade.tape.<pair>``:
  ``symbol, trade_id, price, qty, side, trade_time``;
- ``depthUpdate`` → ``act.exchange.<venue>.orderbook.update.<pair>``:
  ``symbol, bids_delta, asks_delta, first_update_id, last_update_id``;
- ``kline``, closed ones only → ``act.exchange.<venue>.ohlcv.candle.<interval>.<pair>``:
  ``symbol, interval, open, high, low, close, volume, candle_open_time, candle_close_time``.

Prices and quantities arrive as decimal strings and are published as JSON numbers. ``side``
is the aggressor's: Binance's ``m`` (buyer is maker) means a seller hit the bid. A candle's
close time is the bar's end (``t`` + interval, i.e. Binance's inclusive ``T`` + 1 ms), the
convention of the bar datasets and of the backtest. Frames that are not market data (command
replies, unknown events) normalise to nothing; a market-data frame that is malformed raises
`NormalizeError` naming the field.

Example:
    >>> n = BinanceNormalizer()
    >>> [e.topic for e in n.normalize('{"e":"trade","s":"BTCUSDT","t":1,"p":"1.5","q":"2",'
    ...                                '"T":1700000000000,"m":true}')]
    ['act.exchange.binance.trade.tape.BTCUSDT']
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from virtufin import topics
from virtufin.envelope import format_time
from virtufin.errors import TopicError, VirtufinError
from virtufin.topics import EventTypes

__all__ = [
    "BinanceNormalizer",
    "MarketEvent",
    "NormalizeError",
    "Normalizer",
    "epoch_ms",
    "interval_ms",
    "normalizer_for",
]

_VENUE_RE: Final = re.compile(r"^[a-z0-9]{1,32}$")
_INTERVAL_RE: Final = re.compile(r"^(\d+)([smhdwM])$")
_UNIT_MS: Final = {
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class NormalizeError(VirtufinError):
    """A market-data frame is malformed (the field and the reason are named)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"cannot normalise frame: {field}: {reason}")


@dataclass(frozen=True, slots=True)
class MarketEvent:
    """One normalised event: where it goes, its type, payload and event time."""

    topic: str
    type: str
    data: dict[str, Any]
    eventtime: datetime
    subject: str


class Normalizer(Protocol):
    """Turns one inbound frame into market events (none for replies and unknown frames)."""

    venue: str

    def normalize(self, frame: str | bytes | Mapping[str, Any]) -> list[MarketEvent]: ...


def epoch_ms(value: Any, field: str) -> datetime:
    """A UTC datetime from epoch milliseconds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NormalizeError(field, f"expected epoch milliseconds ({value!r})")
    return _EPOCH + timedelta(milliseconds=int(value))


def interval_ms(token: str) -> int | None:
    """Milliseconds of a Binance interval token (``1m``, ``4h``, ``1d``, ``1w``); None for
    calendar months (``1M``), whose length varies."""
    match = _INTERVAL_RE.match(token)
    if match is None:
        raise NormalizeError("k.i", f"unknown interval {token!r}")
    unit = match.group(2)
    if unit == "M":
        return None
    return int(match.group(1)) * _UNIT_MS[unit]


def _number(data: Mapping[str, Any], key: str, field: str) -> float:
    value = data.get(key)
    if isinstance(value, bool):
        raise NormalizeError(field, f"expected a number ({value!r})")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise NormalizeError(field, f"expected a decimal number ({value!r})") from None


def _levels(value: Any, field: str) -> list[list[float]]:
    if not isinstance(value, list):
        raise NormalizeError(field, "expected a list of [price, qty] levels")
    out: list[list[float]] = []
    for i, level in enumerate(value):
        if not isinstance(level, list | tuple) or len(level) < 2:
            raise NormalizeError(f"{field}[{i}]", "expected [price, qty]")
        try:
            out.append([float(level[0]), float(level[1])])
        except (TypeError, ValueError):
            raise NormalizeError(f"{field}[{i}]", f"not numeric ({level!r})") from None
    return out


def _pair(data: Mapping[str, Any], key: str = "s") -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise NormalizeError(key, "missing symbol")
    return value.upper()


class BinanceNormalizer:
    """Binance spot stream frames → Virtufin payloads (see the module docstring).

    Args:
        venue: the venue token of the topics (``binance`` by default).
    """

    def __init__(self, venue: str = "binance") -> None:
        if not _VENUE_RE.match(venue):
            raise ValueError(f"venue {venue!r} must match {_VENUE_RE.pattern}")
        self.venue = venue
        self._types = {
            "trade": EventTypes.market(venue, "trade", "tape"),
            "depth": EventTypes.market(venue, "orderbook", "update"),
            "kline": EventTypes.market(venue, "ohlcv", "candle"),
        }

    def normalize(self, frame: str | bytes | Mapping[str, Any]) -> list[MarketEvent]:
        """The market events in `frame` (empty for replies and frames of other kinds).

        Raises:
            NormalizeError: the frame is market data but a field is missing or malformed.
        """
        if isinstance(frame, str | bytes):
            try:
                obj = json.loads(frame)
            except (ValueError, UnicodeDecodeError):
                return []
        else:
            obj = frame
        if not isinstance(obj, Mapping):
            return []
        if "stream" in obj and isinstance(obj.get("data"), Mapping):
            obj = obj["data"]
        kind = obj.get("e")
        try:
            if kind == "trade":
                return [self._trade(obj)]
            if kind == "depthUpdate":
                return [self._depth(obj)]
            if kind == "kline":
                bar = self._kline(obj)
                return [bar] if bar is not None else []
        except TopicError as exc:
            raise NormalizeError("s", exc.reason) from None
        return []

    def _trade(self, obj: Mapping[str, Any]) -> MarketEvent:
        pair = _pair(obj)
        when = epoch_ms(obj.get("T", obj.get("E")), "T")
        trade_id = obj.get("t")
        if isinstance(trade_id, bool) or not isinstance(trade_id, int | str):
            raise NormalizeError("t", f"expected a trade id ({trade_id!r})")
        maker = obj.get("m")
        if not isinstance(maker, bool):
            raise NormalizeError("m", "expected a boolean (buyer is maker)")
        data = {
            "symbol": pair,
            "trade_id": trade_id,
            "price": _number(obj, "p", "p"),
            "qty": _number(obj, "q", "q"),
            "side": "sell" if maker else "buy",
            "trade_time": format_time(when),
        }
        topic = topics.market_data(self.venue, "trade", "tape", pair)
        return MarketEvent(topic, self._types["trade"], data, when, f"trade/{pair}")

    def _depth(self, obj: Mapping[str, Any]) -> MarketEvent:
        pair = _pair(obj)
        when = epoch_ms(obj.get("E"), "E")
        first, last = obj.get("U"), obj.get("u")
        for name, value in (("U", first), ("u", last)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise NormalizeError(name, f"expected an update id ({value!r})")
        data = {
            "symbol": pair,
            "bids_delta": _levels(obj.get("b"), "b"),
            "asks_delta": _levels(obj.get("a"), "a"),
            "first_update_id": first,
            "last_update_id": last,
        }
        topic = topics.market_data(self.venue, "orderbook", "update", pair)
        return MarketEvent(topic, self._types["depth"], data, when, f"orderbook/{pair}")

    def _kline(self, obj: Mapping[str, Any]) -> MarketEvent | None:
        k = obj.get("k")
        if not isinstance(k, Mapping):
            raise NormalizeError("k", "expected the kline object")
        closed = k.get("x")
        if not isinstance(closed, bool):
            raise NormalizeError("k.x", "expected a boolean (kline closed)")
        if not closed:
            return None  # only finished bars are published: workers act on closes
        pair = _pair(k) if "s" in k else _pair(obj)
        interval = k.get("i")
        if not isinstance(interval, str):
            raise NormalizeError("k.i", "missing interval")
        length = interval_ms(interval)
        opened = epoch_ms(k.get("t"), "k.t")
        closes = (
            opened + timedelta(milliseconds=length)
            if length is not None
            else epoch_ms(k.get("T"), "k.T") + timedelta(milliseconds=1)
        )
        data = {
            "symbol": pair,
            "interval": interval,
            "open": _number(k, "o", "k.o"),
            "high": _number(k, "h", "k.h"),
            "low": _number(k, "l", "k.l"),
            "close": _number(k, "c", "k.c"),
            "volume": _number(k, "v", "k.v"),
            "candle_open_time": format_time(opened),
            "candle_close_time": format_time(closes),
        }
        topic = topics.bar(self.venue, pair, interval=interval)
        return MarketEvent(topic, self._types["kline"], data, closes, f"candle/{pair}")


def normalizer_for(venue: str) -> Normalizer | None:
    """The normaliser of a venue (Binance-style streams: ``binance`` and ``binance*``), or
    None for venues whose frames are published raw."""
    if venue.startswith("binance"):
        return BinanceNormalizer(venue)
    return None
