"""End to end: gateway, workmanager, marketdata (replay) and execution as separate processes
on a NATS JetStream server, state shared through one SQLite file.

Through the gateway with the Python client: create and start the SMA-crossover worker on the
LIVE scenario, replay a synthetic hive dataset onto the act lanes, and watch orders and fills
arrive on ``Gateway.Subscribe`` with valid envelopes on ``sc.LIVE.trading.order.*`` and
``scenarioid=LIVE``. The WorkManager is killed with SIGKILL between the two halves of the
replay; the second half is published while it is down; after its restart, recovery restarts
the worker, which catches up on every bar. The fills must be exactly those of the same bars
run through the same worker in process (the backtest), none lost and none doubled.

Where the kill falls: after two orders (a buy, then a reversal) and right before the next
crossover, which comes on the very first bar after the restart. A worker that lost its state
would need ``slow`` bars to decide again (missing that crossover) and would reuse order ids
(``<worker>-1`` …) that the venue rejects as duplicates. The restarted worker resumes from its
snapshot (``workmanager.snapshot.<id>``) and derives order ids from the bars, so the live run
has no rejection at all and fills every order exactly once, as the uninterrupted backtest does.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import date, timedelta
from pathlib import Path

import grpc
import nats
import pytest
from harness.nats import PrivateNats
from livekit import API_KEY, Cluster, eventually, write_daily_bars, zigzag

from virtufin.backtest import BacktestConfig, HiveDataset, run_backtest
from virtufin.client import AsyncClient, ClientError, Event
from virtufin.envelope import Envelope
from virtufin.topics import EventTypes

pytestmark = [pytest.mark.slow]

SELECTOR = "E2E"
SYMBOL = "BTCUSDT"
WORKER = "sma-live"
PARAMS = {"fast": 3, "slow": 8}
FIRST = zigzag((10, -1.0), (8, 1.5), (8, -1.3), (3, 1.2))  # a buy, a sell, then the kill
REST = zigzag((5, 1.2), (6, -1.1), (8, 1.0), start=FIRST[-1])  # a buy on its first bar, …
ORDER_ID = re.compile(rf"^{WORKER}-[0-9a-f]{{20}}$")
LIVE_TRADING = re.compile(
    r"^sc\.LIVE\.trading\.(order\.(submitted|accepted|filled|cancelled|rejected)|trade\.closed)$"
)


def _expected_fills(root: Path) -> list[tuple[bool, str, float, float]]:
    """(closing order?, side, qty, price) of every fill of the uninterrupted backtest. Order ids
    differ live (they derive from the worker id and the bar events), so they are compared by
    shape."""
    result = run_backtest(
        "sma_cross",
        HiveDataset(root, SELECTOR),
        params=PARAMS,
        config=BacktestConfig(venue="paper"),
    )
    return sorted(
        (o.order_id.endswith("-close"), o.side, o.filled_qty, o.avg_price)
        for o in result.orders
        if o.status == "filled"
    )


async def _worker_consumer_idle(nats_url: str) -> bool:
    """The worker group's consumer on the ACT stream has nothing pending or unacked."""
    nc = await nats.connect(nats_url)
    try:
        jsm = nc.jsm()
        stream = await jsm.stream_info("VIRTUFIN_ACT")
        for info in await jsm.consumers_info("VIRTUFIN_ACT"):
            if f"group={WORKER}" in (info.config.description or ""):
                return bool(
                    info.num_pending == 0
                    and info.num_ack_pending == 0
                    and info.delivered.stream_seq >= stream.state.last_seq
                )
        return False
    finally:
        await nc.close()


async def _replay(client: AsyncClient, root: Path, count: int) -> None:
    started = await client.gateway.marketdata.StartReplay(
        {"dataset_path": str(root), "selector": SELECTOR, "speed": 0}
    )

    async def finished() -> bool:
        replays = (await client.gateway.marketdata.ListReplays())["replays"]
        mine = next(r for r in replays if r["id"] == started["id"])
        assert mine["status"] in ("REPLAY_STATUS_RUNNING", "REPLAY_STATUS_FINISHED"), mine
        return mine["status"] == "REPLAY_STATUS_FINISHED" and int(mine["events_published"]) == count

    await eventually(finished, f"the replay of {root.name}")


async def _until_answering(client: AsyncClient) -> None:
    async def answers() -> bool:
        try:
            await client.gateway.workmanager.ListWorkers()
        except ClientError as exc:
            if exc.code is not grpc.StatusCode.UNAVAILABLE:
                raise
            return False
        return True

    await eventually(answers, "the restarted WorkManager behind the gateway")


async def test_live_pipeline_survives_a_workmanager_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIRTUFIN_API_KEY", raising=False)
    first, rest, everything = tmp_path / "first", tmp_path / "rest", tmp_path / "all"
    write_daily_bars(first, SELECTOR, SYMBOL, FIRST, first=date(2024, 1, 1))
    write_daily_bars(rest, SELECTOR, SYMBOL, REST, first=date(2024, 1, 1) + timedelta(len(FIRST)))
    write_daily_bars(everything, SELECTOR, SYMBOL, FIRST + REST, first=date(2024, 1, 1))
    expected = _expected_fills(everything)
    assert len(expected) == 9  # one buy, then four reversals (close + open)

    server = PrivateNats(tmp_path / "nats").start()
    cluster = Cluster(tmp_path, server.url, ["gateway", "workmanager", "marketdata", "execution"])
    try:
        services = {name: cluster.start(name) for name in cluster.ports}
        for service in services.values():
            await asyncio.to_thread(service.wait_serving)
        gateway = cluster.address("gateway")

        # Authentication: a wrong or a missing key is refused.
        for key in ("wrong-key", ""):
            async with AsyncClient(gateway, api_key=key) as stranger:
                with pytest.raises(ClientError) as refused:
                    await stranger.gateway.list_services()
                assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED

        async with AsyncClient(gateway, api_key=API_KEY) as client:

            async def backends_healthy() -> bool:
                return all(s.healthy for s in await client.gateway.list_services())

            await eventually(backends_healthy, "the gateway to see every backend")
            # Malformed requests: INVALID_ARGUMENT with a message naming the problem.
            with pytest.raises(ClientError) as bad:
                await client.gateway.invoke_json("marketdata", "StartReplay", "{not json")
            assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
            assert "request_data does not fit virtufin.StartReplayRequest" in bad.value.message
            with pytest.raises(ClientError) as bad:
                await client.gateway.marketdata.StartReplay(
                    {"dataset_path": str(first), "selector": "bad-selector"}
                )
            assert (bad.value.code, bad.value.backend) == (grpc.StatusCode.INVALID_ARGUMENT, True)
            assert "selector" in bad.value.message
            with pytest.raises(ClientError) as bad:
                await client.gateway.execution.SetRiskLimits(
                    {"scenario_id": "LIVE", "max_notional": -1}
                )
            assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
            assert "max_notional must be a finite number" in bad.value.message
            with pytest.raises(ClientError) as bad:
                await client.gateway.marketdata.Send({"id": "nope", "message": "{}"})
            assert bad.value.code is grpc.StatusCode.NOT_FOUND

            events: list[Event] = []
            stream = await client.gateway.subscribe(topics=["sc.LIVE.trading.>"])

            async def collect() -> None:
                async for event in stream:
                    events.append(event)

            collector = asyncio.create_task(collect())
            await client.gateway.workmanager.CreateWorker(
                {
                    "id": WORKER,
                    "code_source": {"url": "workers/sma_cross/manifest.json"},
                    "topic": f"act.exchange.replay.ohlcv.candle.1d.{SYMBOL}",
                    "group": WORKER,
                    "parameters_json": json.dumps(PARAMS),
                    "scenario_id": "LIVE",
                    "start": True,
                }
            )

            def submitted() -> list[Envelope]:
                return [e.envelope for e in events if e.topic.endswith(".submitted")]

            # First half: two orders, then the worker has consumed and acknowledged all of it.
            await _replay(client, first, len(FIRST))
            await eventually(lambda: _worker_consumer_idle(server.url), "the worker to catch up")
            await eventually(lambda: len(submitted()) == 2, "the first half's orders")
            services["workmanager"].kill9()

            # Second half while the WorkManager is down, then the restart.
            await _replay(client, rest, len(REST))
            restarted = cluster.start("workmanager", label="workmanager-restarted")
            await asyncio.to_thread(restarted.wait_serving)
            await _until_answering(client)
            listed = await client.gateway.workmanager.ListWorkers()
            assert [(w["id"], w["status"]) for w in listed["workers"]] == [
                (WORKER, "WORKER_STATUS_RUNNING")
            ]

            def fills() -> list[Envelope]:
                return [e.envelope for e in events if e.envelope.type == EventTypes.order("filled")]

            def rejected() -> list[Envelope]:
                return [e.envelope for e in events if e.topic.endswith(".rejected")]

            await eventually(lambda: len(fills()) >= len(expected), "every fill", within_s=30)
            await asyncio.sleep(0.5)  # nothing more may come
            assert rejected() == []  # no duplicate order id, no order on a cold worker
            live = sorted(
                (
                    f.data["order_id"].endswith("-close"),
                    f.data["side"],
                    f.data["qty_filled"],
                    f.data["price"],
                )
                for f in fills()
            )
            assert live == expected

            # Every order once, with an id derived from its bar; each filled exactly once.
            order_ids = [e.data["order_id"] for e in submitted()]
            assert len(order_ids) == 5
            assert all(ORDER_ID.match(o) for o in order_ids), order_ids
            assert len(set(order_ids)) == len(order_ids)
            filled_ids = [f.data["order_id"] for f in fills()]
            assert len(filled_ids) == len(set(filled_ids))  # never filled twice
            assert sorted(o for o in filled_ids if not o.endswith("-close")) == sorted(order_ids)

            # The worker's snapshot: every bar it saw, the last `slow` closes of its symbol.
            snapshot = await client.state.get("workmanager", f"workmanager.snapshot.{WORKER}")
            assert snapshot is not None
            assert snapshot.value["changes"] == len(FIRST) + len(REST)
            window = snapshot.value["state"]["symbols"][SYMBOL]
            assert window["closes"] == (FIRST + REST)[-PARAMS["slow"] :]

            # Envelopes, lanes and scenario of everything on the stream.
            for event in events:
                envelope = event.envelope.validate()
                match = LIVE_TRADING.match(event.topic)
                assert match, event.topic
                assert envelope.scenarioid == "LIVE"
                entity, kind = event.topic.split(".")[3:5]
                assert envelope.type == f"com.virtufin.trading.{entity}.{kind}"
                assert envelope.marketlane == "act"
            assert {e.source for e in submitted()} == {f"urn:com.virtufin.worker.{WORKER}"}
            for fill in fills():
                assert set(fill.data) >= {
                    "fill_id",
                    "qty_filled",
                    "price",
                    "fee",
                    "liquidity",
                    "remaining_qty",
                    "filled_at",
                    "realized_pnl",
                }
                assert fill.data["remaining_qty"] == 0

            # The same order again: the broker drops the redelivered event; a new request
            # reusing the order id is rejected by the venue; neither fills.
            original = submitted()[0]
            await client.pubsub.publish("sc.LIVE.trading.order.submitted", original)
            reused = original.with_changes(id=str(uuid.uuid4()))
            await client.pubsub.publish("sc.LIVE.trading.order.submitted", reused)

            await eventually(rejected, "the duplicate's rejection")
            assert (
                rejected()[0].data["reason"] == f"duplicate order id {original.data['order_id']!r}"
            )
            await asyncio.sleep(0.5)
            assert len(fills()) == len(expected)
            assert len(rejected()) == 1

            # The execution's view agrees: the final position of the backtest.
            positions = (await client.gateway.execution.GetPositions({"scenario_id": "LIVE"}))[
                "positions"
            ]
            units = sum(qty if side == "buy" else -qty for _, side, qty, _ in expected)
            assert [(p["symbol"], p["size"]) for p in positions] == [(SYMBOL, units)]
            orders = (await client.gateway.execution.GetOrders({"scenario_id": "LIVE"}))["orders"]
            assert sorted(o["id"] for o in orders) == sorted(filled_ids)
            assert {o["status"] for o in orders} == {"ORDER_STATUS_FILLED"}

            collector.cancel()
            await stream.aclose()
    finally:
        cluster.stop_all()
        server.stop()
