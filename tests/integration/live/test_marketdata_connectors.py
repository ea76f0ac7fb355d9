"""The market-data connectors against a local WebSocket venue and a Parquet dataset.

- Binance ``trade``/``depthUpdate``/``kline`` frames (raw and combined-stream) become
  Virtufin's ``trade.tape``/``orderbook.update``/``ohlcv.candle`` payloads on
  ``act.exchange.binance…``; open klines are not published; the publish pattern filters;
- correlated sends: the first reply with the id wins and is not published, a missing reply
  times out, fire-and-forget returns at once;
- a dropped connection reconnects with backoff, re-subscribes, and every frame received
  before the drop is published (acknowledged) before it is counted;
- the replay connector plays the hive dataset onto the act lanes in time order, paced by
  `speed`, with the backtest's bar payload.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import date
from pathlib import Path

import pytest
from fakevenue import FakeVenue, combined, depth, kline, trade
from livekit import eventually, write_daily_bars, zigzag

from virtufin.bus.memory import MemoryBus
from virtufin.bus.port import Delivery
from virtufin.envelope import Envelope
from virtufin.errors import ConfigError, TopicError
from virtufin.marketdata.connectors import (
    Backoff,
    BinanceNormalizer,
    ConnectionManager,
    ConnectionStatus,
    NormalizeError,
    Replay,
    ReplayStatus,
    WebSocketError,
)

MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
FAST = Backoff(initial_s=0.05, max_s=0.2)


class Inbox:
    def __init__(self) -> None:
        self.events: list[tuple[str, Envelope]] = []

    async def __call__(self, envelope: Envelope, delivery: Delivery) -> None:
        self.events.append((delivery.topic, envelope))


async def _bus_with_inbox() -> tuple[MemoryBus, Inbox]:
    bus = MemoryBus()
    inbox = Inbox()
    await bus.subscribe("act.exchange.>", inbox)
    return bus, inbox


def test_binance_frames_become_virtufin_payloads() -> None:
    normalizer = BinanceNormalizer()
    [tape] = normalizer.normalize(trade("btcusdt", 42, "37000.10", "0.5", maker=True, ms=MS))
    assert tape.topic == "act.exchange.binance.trade.tape.BTCUSDT"
    assert tape.type == "com.virtufin.exchange.binance.trade.tape"
    assert tape.data == {
        "symbol": "BTCUSDT",
        "trade_id": 42,
        "price": 37000.10,
        "qty": 0.5,
        "side": "sell",  # the buyer was the maker: a seller hit the bid
        "trade_time": "2023-11-14T22:13:20Z",
    }
    [book] = normalizer.normalize(combined("ethusdt@depth", depth("ETHUSDT", 10, 12, ms=MS)))
    assert book.topic == "act.exchange.binance.orderbook.update.ETHUSDT"
    assert book.data["bids_delta"] == [[100.5, 2.0], [100.4, 0.0]]
    assert book.data["asks_delta"] == [[100.6, 1.5]]
    assert (book.data["first_update_id"], book.data["last_update_id"]) == (10, 12)
    assert normalizer.normalize(kline("BTCUSDT", MS, "101.5", closed=False)) == []
    [bar] = normalizer.normalize(kline("BTCUSDT", MS, "101.5", closed=True))
    assert bar.topic == "act.exchange.binance.ohlcv.candle.1m.BTCUSDT"
    assert bar.data == {
        "symbol": "BTCUSDT",
        "interval": "1m",
        "open": 100.0,
        "high": 102.0,
        "low": 99.0,
        "close": 101.5,
        "volume": 12.5,
        "candle_open_time": "2023-11-14T22:13:20Z",
        "candle_close_time": "2023-11-14T22:14:20Z",
    }
    assert bar.eventtime.isoformat() == "2023-11-14T22:14:20+00:00"
    assert normalizer.normalize('{"result": null, "id": 1}') == []
    assert normalizer.normalize("not json") == []
    with pytest.raises(NormalizeError, match="p: expected a decimal number"):
        normalizer.normalize(trade("BTCUSDT", 1, "abc", "1", maker=False, ms=MS))


async def test_connect_subscribe_publish_and_correlate() -> None:
    bus, inbox = await _bus_with_inbox()
    async with FakeVenue() as venue:
        manager = ConnectionManager(publish=bus.publish, backoff=FAST)
        conn = await manager.connect(venue.url, venue="binance", auto_reconnect=True)
        assert conn.status is ConnectionStatus.CONNECTED
        reply = await conn.send(
            '{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@kline_1m"]}', timeout_s=2
        )
        assert json.loads(reply) == {"result": None, "id": 1}
        assert conn.subscriptions == ("btcusdt@trade", "btcusdt@kline_1m")
        conn.start_publish("act.exchange.binance.>")
        await venue.push(
            trade("BTCUSDT", 1, "100.0", "1", maker=False, ms=MS),
            kline("BTCUSDT", MS, "101.0", closed=False),
            kline("BTCUSDT", MS, "101.5", closed=True),
            '{"result": null, "id": 99}',  # a reply nobody waits for: not market data
        )
        await eventually(lambda: conn.frames_received == 4, "four frames")
        assert [t for t, _ in inbox.events] == [
            "act.exchange.binance.trade.tape.BTCUSDT",
            "act.exchange.binance.ohlcv.candle.1m.BTCUSDT",
        ]
        assert (conn.frames_published, conn.frames_ignored) == (2, 2)
        envelope = inbox.events[0][1]
        assert (envelope.source, envelope.marketlane, envelope.clocktype) == (
            "urn:com.virtufin.marketdata",
            "act",
            "wall",
        )
        assert envelope.extensions["websocketid"] == conn.id

        # The pattern filters: trades only.
        conn.start_publish("act.exchange.binance.trade.>")
        await venue.push(
            kline("BTCUSDT", MS + 60_000, "102", closed=True),
            trade("BTCUSDT", 2, "101", "1", maker=False, ms=MS),
        )
        await eventually(lambda: len(inbox.events) == 3, "the second trade")
        assert inbox.events[-1][0].endswith("trade.tape.BTCUSDT")

        # First reply wins; a later one with the same id is an ordinary frame.
        venue.reply_twice = True
        reply = await conn.send('{"method":"LIST_SUBSCRIPTIONS","id":"abc"}', timeout_s=2)
        assert json.loads(reply) == {"result": None, "id": "abc"}
        # No reply in time: a timeout naming the id.
        venue.silent_ids.add(7)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no reply with id 7"):
            await conn.send('{"method":"SUBSCRIBE","params":["x@trade"],"id":7}', timeout_s=0.3)
        assert 0.25 < time.monotonic() - started < 2
        assert "x@trade" not in conn.subscriptions
        assert await conn.send('{"method":"PING"}') == ""  # fire and forget
        with pytest.raises(ValueError, match="JSON object"):
            await conn.send("[1, 2]", timeout_s=1)
        with pytest.raises(TopicError, match="venue token"):
            conn.start_publish("act.exchange.kraken.>")
        assert await manager.disconnect(conn.id)
        assert conn.status is ConnectionStatus.DISCONNECTED
        with pytest.raises(WebSocketError, match="no such connection"):
            manager.get(conn.id)


async def test_a_drop_reconnects_resubscribes_and_loses_no_acknowledged_frame() -> None:
    released = asyncio.Event()
    bus, inbox = await _bus_with_inbox()

    async def slow_publish(topic: str, envelope: Envelope) -> None:
        await released.wait()  # the broker is slow: frames queue up behind this publish
        await bus.publish(topic, envelope)

    statuses: list[ConnectionStatus] = []

    async def on_status(conn: object) -> None:
        statuses.append(conn.status)  # type: ignore[attr-defined]

    async with FakeVenue() as venue:
        manager = ConnectionManager(publish=slow_publish, on_status=on_status, backoff=FAST)
        conn = await manager.connect(venue.url, venue="binance", auto_reconnect=True)
        await conn.send('{"method":"SUBSCRIBE","params":["btcusdt@trade"]}', timeout_s=2)
        conn.start_publish("act.exchange.binance.trade.>")
        await venue.push(
            *(trade("BTCUSDT", i, f"{100 + i}", "1", maker=False, ms=MS + i) for i in range(5))
        )
        await eventually(lambda: conn.frames_received >= 1, "the first frame")
        await venue.drop()  # the venue goes away while frames wait for the broker
        await asyncio.sleep(0.2)
        assert conn.frames_published == 0  # nothing counted before the broker acknowledged
        released.set()
        await eventually(lambda: conn.frames_published == 5, "the five frames")
        assert [e.data["trade_id"] for _, e in inbox.events] == [0, 1, 2, 3, 4]

        # Back, re-subscribed on the new socket, and publishing again.
        await eventually(lambda: len(venue.subscriptions) == 2, "a second connection")
        await eventually(lambda: venue.subscriptions[1] == ["btcusdt@trade"], "re-subscribed")
        assert conn.status is ConnectionStatus.CONNECTED
        await venue.push(trade("BTCUSDT", 5, "105", "1", maker=True, ms=MS + 5))
        await eventually(lambda: conn.frames_published == 6, "the frame after reconnecting")
        assert [e.data["trade_id"] for _, e in inbox.events] == [0, 1, 2, 3, 4, 5]
        assert ConnectionStatus.RECONNECTING in statuses
        assert statuses[-1] is ConnectionStatus.CONNECTED

        # A venue that is away for a while: backoff until it listens again.
        await venue.stop()
        await eventually(lambda: conn.status is ConnectionStatus.RECONNECTING, "reconnecting")
        await asyncio.sleep(0.5)
        await venue.restart()
        await eventually(lambda: conn.status is ConnectionStatus.CONNECTED, "connected again")
        await eventually(lambda: venue.subscriptions[-1] == ["btcusdt@trade"], "re-subscribed")
        assert conn.connects == 3
        await manager.close()


async def test_connect_refusals() -> None:
    bus = MemoryBus()
    manager = ConnectionManager(publish=bus.publish, backoff=FAST, open_timeout_s=2)
    with pytest.raises(ValueError, match="ws:// or wss://"):
        await manager.connect("http://127.0.0.1:1/ws", venue="binance")
    with pytest.raises(ValueError, match="venue is required"):
        await manager.connect("ws://127.0.0.1:1/ws")
    with pytest.raises(WebSocketError, match="cannot connect"):
        await manager.connect("ws://127.0.0.1:1/ws", venue="binance", auto_reconnect=False)
    assert manager.list() == []
    pending = await manager.connect("ws://127.0.0.1:1/ws", venue="binance", auto_reconnect=True)
    assert pending.status is ConnectionStatus.RECONNECTING
    assert pending.last_error
    await manager.close()


async def test_raw_frames_of_venues_without_a_normaliser() -> None:
    bus, inbox = await _bus_with_inbox()
    async with FakeVenue() as venue:
        manager = ConnectionManager(publish=bus.publish, backoff=FAST)
        conn = await manager.connect(venue.url, venue="kraken")
        with pytest.raises(TopicError, match="no normaliser"):
            conn.start_publish("act.exchange.kraken.>")
        conn.start_publish("act.exchange.kraken.raw.frame")
        await venue.push('{"channel":"book","data":[1]}', "heartbeat")
        await eventually(lambda: len(inbox.events) == 2, "two raw frames")
        assert inbox.events[0][1].data == {"channel": "book", "data": [1]}
        assert inbox.events[1][1].data == "heartbeat"
        assert inbox.events[1][1].datacontenttype == "text/plain"
        assert inbox.events[0][1].type == "com.virtufin.exchange.kraken.raw.frame"
        await manager.close()


async def test_replay_plays_the_dataset_on_the_act_lanes(tmp_path: Path) -> None:
    write_daily_bars(tmp_path, "SMALL", "BTCUSDT", zigzag((6, 1.0)), first=date(2024, 1, 1))
    write_daily_bars(tmp_path, "SMALL", "ETHUSDT", zigzag((6, -1.0)), first=date(2024, 1, 3))
    bus, inbox = await _bus_with_inbox()
    replay = Replay(root=tmp_path, selector="SMALL", publish=bus.publish, speed=0)
    assert await replay.run() is ReplayStatus.FINISHED
    assert replay.events_published == 12
    # Every bar arrived, ids ``<replay id>-<n>`` counting bars: the bus de-duplicates by
    # (source, id), so bars sharing an id would lose the second (later batches' bars did).
    assert [e.id for _, e in inbox.events] == [f"{replay.id}-{n}" for n in range(12)]
    times = [e.eventtime for _, e in inbox.events]
    assert times == sorted(times)
    topic, first = inbox.events[0]
    assert topic == "act.exchange.replay.ohlcv.candle.1d.BTCUSDT"
    assert first.data == {
        "symbol": "BTCUSDT",
        "interval": "1d",
        "open": 101.0,
        "high": 101.5,
        "low": 100.5,
        "close": 101.0,
        "volume": 1000.0,
        "candle_open_time": "2024-01-01T00:00:00Z",
        "candle_close_time": "2024-01-02T00:00:00Z",
    }
    assert (first.clocktype, first.marketlane, first.marketselector) == ("historical", "act", None)
    assert {t.rsplit(".", 1)[1] for t, _ in inbox.events} == {"BTCUSDT", "ETHUSDT"}

    # Paced: 6 daily bars at one day per 0.1 s take about half a second.
    paced = Replay(
        root=tmp_path,
        selector="SMALL",
        symbols=["BTCUSDT"],
        speed=86_400 / 0.1,
        publish=bus.publish,
    )
    started = time.monotonic()
    assert await paced.run() is ReplayStatus.FINISHED
    assert 0.4 < time.monotonic() - started < 2.0

    # Stopped early, and the hyp lane on request.
    hyp = Replay(
        root=tmp_path, selector="SMALL", speed=86_400 / 0.5, lane="hyp", publish=bus.publish
    )
    await bus.subscribe("hyp.>", inbox)
    task = asyncio.create_task(hyp.run())
    await eventually(lambda: hyp.events_published >= 1, "the first hyp bar")
    hyp.stop()
    assert await task is ReplayStatus.STOPPED
    assert hyp.events_published < 12
    assert inbox.events[-1][0].startswith("hyp.SMALL.exchange.replay.ohlcv.candle.1d.")

    with pytest.raises(ConfigError, match="no such dataset folder"):
        Replay(root=tmp_path, selector="NOPE", publish=bus.publish)
    with pytest.raises(ConfigError, match="speed"):
        Replay(root=tmp_path, selector="SMALL", publish=bus.publish, speed=-1)
    with pytest.raises(ConfigError, match="not in the dataset"):
        Replay(root=tmp_path, selector="SMALL", symbols=["DOGE"], publish=bus.publish)
