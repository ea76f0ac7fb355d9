"""The marketdata and execution services' RPCs, as processes on NATS, through the gateway.

- ``MarketData``: Connect to a local Binance-style venue, correlated ``Send`` (SUBSCRIBE),
  StartPublish, normalised events on ``Gateway.Subscribe``, List, StopPublish, Disconnect,
  and the refusals (bad topic INVALID_ARGUMENT, unknown id NOT_FOUND, a reply that never comes
  DEADLINE_EXCEEDED, an unreachable venue UNAVAILABLE); replays: List and Stop;
- ``Execution``: SetRiskLimits/GetRiskLimits round trip (persisted), an unknown scenario is
  NOT_FOUND, GetOrders/GetPositions of an empty scenario.
"""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path

import grpc
import pytest
from fakevenue import FakeVenue, depth, kline, trade
from harness.nats import PrivateNats
from livekit import API_KEY, Cluster, eventually, write_daily_bars, zigzag

from virtufin.client import AsyncClient, ClientError, Event

pytestmark = [pytest.mark.slow]
MS = 1_700_000_000_000


async def test_marketdata_and_execution_rpcs(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path / "nats").start()
    cluster = Cluster(tmp_path, server.url, ["gateway", "marketdata", "execution"])
    try:
        for name in ("gateway", "marketdata", "execution"):
            cluster.start(name)
        for service in cluster.processes:
            await asyncio.to_thread(service.wait_serving)
        async with (
            FakeVenue() as venue,
            AsyncClient(cluster.address("gateway"), api_key=API_KEY) as client,
        ):
            await eventually(
                lambda: _all_healthy(client), "the gateway to see its backends", within_s=20
            )
            md = client.gateway.marketdata
            events: list[Event] = []
            stream = await client.gateway.subscribe(topics=["act.exchange.binance.>"])
            collector = asyncio.create_task(_collect(stream, events))

            connected = await md.Connect(
                {"url": venue.url, "venue": "binance", "auto_reconnect": True}
            )
            assert connected["status"] == "CONNECTION_STATUS_CONNECTED"
            conn_id = connected["id"]
            reply = await md.Send(
                {
                    "id": conn_id,
                    "message": json.dumps(
                        {
                            "method": "SUBSCRIBE",
                            "params": ["btcusdt@trade", "btcusdt@depth"],
                            "id": 5,
                        }
                    ),
                    "timeout_ms": 2000,
                }
            )
            assert json.loads(reply["reply"]) == {"result": None, "id": 5}
            started = await md.StartPublish({"id": conn_id, "topic": "act.exchange.binance.>"})
            assert started["connection"]["publish_topic"] == "act.exchange.binance.>"
            await venue.push(
                trade("BTCUSDT", 7, "37000.5", "0.25", maker=False, ms=MS),
                depth("BTCUSDT", 100, 105, ms=MS),
                kline("BTCUSDT", MS, "37010", closed=False),
            )
            await eventually(lambda: len(events) == 2, "two normalised events")
            by_topic = {e.topic: e.envelope for e in events}
            tape = by_topic["act.exchange.binance.trade.tape.BTCUSDT"]
            assert tape.type == "com.virtufin.exchange.binance.trade.tape"
            assert tape.data["side"] == "buy"
            assert (tape.data["price"], tape.data["qty"]) == (37000.5, 0.25)
            book = by_topic["act.exchange.binance.orderbook.update.BTCUSDT"]
            assert book.data["last_update_id"] == 105
            assert tape.marketlane == "act"
            listed = (await md.List())["connections"]
            assert [(c["id"], c["status"], c["venue"]) for c in listed] == [
                (conn_id, "CONNECTION_STATUS_CONNECTED", "binance")
            ]

            # Refusals, each with its status and a message.
            for request, code, words in (
                (
                    {"id": conn_id, "topic": "sc.LIVE.trading.order.filled"},
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "act.exchange",
                ),
                (
                    {"id": conn_id, "topic": "act.exchange.kraken.>"},
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "venue token",
                ),
                (
                    {"id": "missing", "topic": "act.exchange.binance.>"},
                    grpc.StatusCode.NOT_FOUND,
                    "no such connection",
                ),
            ):
                with pytest.raises(ClientError) as refused:
                    await md.StartPublish(request)
                assert refused.value.code is code
                assert words in refused.value.message
            venue.silent_ids.add(9)
            with pytest.raises(ClientError) as late:
                await md.Send(
                    {"id": conn_id, "message": '{"method":"X","id":9}', "timeout_ms": 300}
                )
            assert late.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
            assert "no reply with id 9" in late.value.message
            with pytest.raises(ClientError) as unreachable:
                await md.Connect({"url": "ws://127.0.0.1:1/ws", "venue": "binance"})
            assert unreachable.value.code is grpc.StatusCode.UNAVAILABLE

            stopped = await md.StopPublish({"id": conn_id})
            assert stopped["connection"]["publish_topic"] == ""
            await venue.push(trade("BTCUSDT", 8, "1", "1", maker=False, ms=MS))
            await asyncio.sleep(0.3)
            assert len(events) == 2
            assert (await md.Disconnect({"id": conn_id}))["found"] is True
            assert (await md.Disconnect({"id": conn_id}))["found"] is False
            assert (await md.List())["connections"] == []

            # Replays: a paced one is listed while running and can be stopped.
            write_daily_bars(
                tmp_path / "data", "SLOW", "ETHUSDT", zigzag((20, 1.0)), first=date(2024, 1, 1)
            )
            replay = await md.StartReplay(
                {"dataset_path": str(tmp_path / "data"), "selector": "SLOW", "speed": 86_400 / 0.5}
            )
            replays = (await md.ListReplays())["replays"]
            assert [(r["id"], r["status"], r["symbols"]) for r in replays] == [
                (replay["id"], "REPLAY_STATUS_RUNNING", ["ETHUSDT"])
            ]
            ended = (await md.StopReplay({"id": replay["id"]}))["replay"]
            assert ended["status"] == "REPLAY_STATUS_STOPPED"
            assert int(ended["events_published"]) < 20
            with pytest.raises(ClientError) as missing:
                await md.StopReplay({"id": "nope"})
            assert missing.value.code is grpc.StatusCode.NOT_FOUND

            # Execution: risk limits persist; reads of an empty scenario are empty.
            ex = client.gateway.execution
            limits = await ex.SetRiskLimits(
                {"scenario_id": "LIVE", "max_notional": 5000, "max_position": 2}
            )
            assert limits["limits"] == {
                "scenario_id": "LIVE",
                "max_notional": 5000.0,
                "max_position": 2.0,
            }
            assert (await ex.GetRiskLimits({"scenario_id": "LIVE"}))["limits"] == limits["limits"]
            with pytest.raises(ClientError) as unknown:
                await ex.SetRiskLimits({"scenario_id": "NOPE_42", "max_notional": 1})
            assert unknown.value.code is grpc.StatusCode.NOT_FOUND
            with pytest.raises(ClientError) as bad:
                await ex.GetOrders({"scenario_id": "not valid"})
            assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
            assert (await ex.GetOrders({"scenario_id": "LIVE"}))["orders"] == []
            assert (await ex.GetPositions({"scenario_id": "LIVE"}))["positions"] == []
            collector.cancel()
            await stream.aclose()
        # The limits survive a restart of the execution service.
        execution = next(p for p in cluster.processes if p.name == "execution")
        execution.stop()
        cluster.start("execution", label="execution-restarted").wait_serving()
        async with AsyncClient(cluster.address("gateway"), api_key=API_KEY) as client:
            await eventually(lambda: _all_healthy(client), "execution back", within_s=20)
            again = await client.gateway.execution.GetRiskLimits({"scenario_id": "LIVE"})
            assert again["limits"]["max_notional"] == 5000.0
    finally:
        cluster.stop_all()
        server.stop()


async def _all_healthy(client: AsyncClient) -> bool:
    return all(s.healthy for s in await client.gateway.list_services())


async def _collect(stream: object, events: list[Event]) -> None:
    async for event in stream:  # type: ignore[attr-defined]
        events.append(event)
