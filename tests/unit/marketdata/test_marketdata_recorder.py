"""The recorder: live candles on the bus → the bar dataset, idempotent under redelivery."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from virtufin import topics
from virtufin.bus import MemoryBus
from virtufin.envelope import Envelope
from virtufin.marketdata import BarRecorder, read_partition


def _candle(day: int, close: float) -> tuple[str, Envelope]:
    ts = datetime(2024, 1, day + 1, tzinfo=UTC)
    return topics.bar("binance", "BTCUSDT", interval="1d"), Envelope.new(
        type=topics.EventTypes.market("binance", "ohlcv", "candle"),
        source=topics.source_urn("marketdata"),
        data={
            "symbol": "BTCUSDT",
            "open": close - 1,
            "high": close + 1,
            "low": close - 2,
            "close": close,
            "volume": 3.0,
            "candle_close_time": ts.isoformat(),
        },
        eventtime=ts,
    )


async def test_recorded_candles_land_in_their_partitions(tmp_path: Path) -> None:
    bus = MemoryBus()
    recorder = BarRecorder(bus, tmp_path, flush_rows=1000)
    await recorder.start()
    for day, close in ((2, 100.0), (3, 101.0), (2, 100.0)):
        topic, envelope = _candle(day, close)
        await bus.publish(topic, envelope)
    await bus.publish(
        "act.exchange.binance.trade.tape.BTCUSDT",
        Envelope.new(type="com.virtufin.exchange.binance.trade.tape", source="s", data={}),
    )
    await bus.drain()
    writes = await recorder.stop()
    assert recorder.recorded == 3
    assert recorder.ignored == 1
    assert sorted(w.path.parent.name for w in writes) == ["date=2024-01-02", "date=2024-01-03"]
    day2 = read_partition(tmp_path, "RECORDED", "BTCUSDT", date(2024, 1, 2))
    assert day2.column("close").to_pylist() == [100.0]  # redelivered bar stored once
    assert day2.column("interval").to_pylist() == ["1d"]
