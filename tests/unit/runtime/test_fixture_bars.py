"""The shared bar fixture (tests/fixtures/bars_small.jsonl) is reproducible and well formed."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from virtufin.envelope import Envelope, decode, encode, format_time
from virtufin.topics import EventTypes, source_urn

FIXTURE = Path(__file__).parents[2] / "fixtures" / "bars_small.jsonl"
START = datetime(2024, 1, 1, tzinfo=UTC)


def generate_bars(count: int = 300, *, seed: int = 7) -> list[Envelope]:
    """A deterministic random walk of daily BTCUSDT candles (with a slow cycle, so SMAs cross)."""
    rng = random.Random(seed)
    close = 100.0
    bars = []
    for i in range(count):
        opened = START + timedelta(days=i)
        closed = opened + timedelta(days=1)
        drift = 0.006 * math.sin(2 * math.pi * i / 45)
        new_close = round(close * math.exp(drift + rng.gauss(0.0, 0.018)), 2)
        high = round(max(close, new_close) * (1 + abs(rng.gauss(0.0, 0.006))), 2)
        low = round(min(close, new_close) * (1 - abs(rng.gauss(0.0, 0.006))), 2)
        bars.append(
            Envelope(
                id=f"bar-SMALL-BTCUSDT-{i:04d}",
                source=source_urn("marketdata"),
                type=EventTypes.market("binance", "ohlcv", "candle"),
                time=closed,
                subject="candle/BTCUSDT",
                data={
                    "symbol": "BTCUSDT",
                    "interval": "1d",
                    "open": close,
                    "high": high,
                    "low": low,
                    "close": new_close,
                    "volume": round(rng.uniform(100.0, 1000.0), 3),
                    "candle_open_time": format_time(opened),
                    "candle_close_time": format_time(closed),
                },
                correlationid=f"bar-SMALL-BTCUSDT-{i:04d}",
                scenarioid="BT_SMALL",
                runid="run-small-1",
                clocktype="historical",
                eventtime=closed,
                marketlane="hyp",
                marketselector="SMALL",
            )
        )
        close = new_close
    return bars


def test_fixture_matches_its_generator() -> None:
    expected = b"".join(encode(bar) + b"\n" for bar in generate_bars())
    assert FIXTURE.read_bytes() == expected


def test_fixture_bars_are_ordered_and_consistent() -> None:
    bars = [decode(line) for line in FIXTURE.read_bytes().splitlines()]
    assert len(bars) == 300
    times = [bar.eventtime for bar in bars]
    assert times == sorted(times)
    assert len(set(times)) == 300
    for bar in bars:
        d = bar.data
        assert d["low"] <= min(d["open"], d["close"]) <= max(d["open"], d["close"]) <= d["high"]
        assert d["candle_close_time"] == format_time(bar.eventtime)


if __name__ == "__main__":  # regenerate: python -m tests.unit.runtime.test_fixture_bars
    FIXTURE.write_bytes(b"".join(encode(bar) + b"\n" for bar in generate_bars()))
