"""Crashes and restarts: kill -9 the WorkManager, recovery under the leader lease, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from harness.bars import candle
from harness.services import ServiceProcess
from svc_cluster import API_KEY, Cluster, echo_topics, free_port, group_name

from virtufin import statekeys, topics
from virtufin.bus.nats import NatsBus
from virtufin.client import AsyncClient, ClientError
from virtufin.envelope import Envelope
from virtufin.proto import ensure_built
from virtufin.state.sqlite import SqliteStateStore

ensure_built()
from virtufin.proto.gen import workmanager_pb2, workmanager_pb2_grpc  # noqa: E402

pytestmark = [pytest.mark.nats, pytest.mark.slow]

ECHO_MANIFEST = "workers/echo/manifest.json"


def _ping() -> Envelope:
    return Envelope.new(
        type="com.virtufin.echo.command", source="urn:com.virtufin.itest", data={"command": "ping"}
    )


async def _until_answering(client: AsyncClient, *, within_s: float = 20.0) -> None:
    """Retry a gateway call until the (restarted) backend answers through it."""
    async with asyncio.timeout(within_s):
        while True:
            try:
                await client.gateway.workmanager.ListWorkers()
                return
            except ClientError as exc:
                if exc.code is not grpc.StatusCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(0.2)


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_kill_9_then_restart_recovers_the_running_worker(cluster: Cluster) -> None:
    workmanager = cluster.start("workmanager")
    gateway = cluster.start("gateway")
    workmanager.wait_serving()
    gateway.wait_serving()
    worker_id = f"echo-{group_name('kill9')[-12:]}".lower()
    requests, replies = echo_topics("kill9")
    async with AsyncClient(cluster.gateway_address, api_key=API_KEY) as client:
        await client.gateway.workmanager.CreateWorker(
            {
                "id": worker_id,
                "code_source": {"url": ECHO_MANIFEST},
                "topic": requests,
                "group": group_name("kill9"),
                "start": True,
            }
        )
        first = await client.publish_with_result(requests, _ping(), reply_topic=replies, timeout=10)
        assert first.data["message"] == "pong"

        workmanager.kill9()
        stream = await client.gateway.subscribe(
            topics=["workmanager.lifecycle"],
            event_types=["com.virtufin.workmanager.lifecycle.online"],
        )
        restarted = cluster.start("workmanager", label="workmanager-restarted")
        restarted.wait_serving()
        async with asyncio.timeout(15):
            online = await anext(stream)
        await stream.aclose()
        assert online.envelope.data["worker_id"] == worker_id

        await _until_answering(client)
        listed = await client.workmanager.list_workers()
        assert [(w.id, w.status) for w in listed] == [
            (worker_id, workmanager_pb2.WORKER_STATUS_RUNNING)
        ]
        again = await client.publish_with_result(requests, _ping(), reply_topic=replies, timeout=10)
        assert again.data["message"] == "pong"
        lease = await client.state.get("workmanager", "workmanager.recovery.leader")
        assert lease is not None
        assert lease.value["holder"].endswith(f":{restarted.grpc_port}")
    assert '"recovered": ["' + worker_id in restarted.log()


async def test_of_two_replicas_starting_together_only_one_recovers(cluster: Cluster) -> None:
    worker_id = f"echo-{group_name('replicas')[-12:]}".lower()
    # The first replica's lease expires after 1 s, so the next two compete for it.
    first = cluster.start(
        "workmanager",
        env={"VIRTUFIN_REPLICA_ID": "wm-original", "WORKER_RECOVERY_LEASE_TTL_SECONDS": "1"},
    )
    first.wait_serving()
    async with grpc.aio.insecure_channel(first.address) as channel:
        stub = workmanager_pb2_grpc.WorkManagerStub(channel)
        await stub.CreateWorker(
            workmanager_pb2.CreateWorkerRequest(
                id=worker_id,
                code_source=workmanager_pb2.CodeSource(url=ECHO_MANIFEST),
                topic=echo_topics("replicas")[0],
                group=group_name("replicas"),
                start=True,
            ),
            metadata=(("x-api-key", API_KEY),),
        )
    first.kill9()
    await asyncio.sleep(1.2)
    replicas = [
        cluster.start(
            "workmanager",
            port=free_port(),
            env={"VIRTUFIN_REPLICA_ID": f"wm-{index}"},
            label=f"replica-{index}",
        )
        for index in (1, 2)
    ]
    for replica in replicas:
        replica.wait_serving()
    leaders, running = [], []
    for replica in replicas:
        status, metrics = replica.http("/metrics")
        assert status == 200
        leaders.append(_metric(metrics, "virtufin_workmanager_recovery_leader"))
        running.append(_metric(metrics, 'virtufin_workmanager_workers{state="running"}'))
    assert sorted(leaders) == [0.0, 1.0]
    assert running == leaders  # the leader, and only it, runs the recovered worker
    leader = replicas[leaders.index(1.0)]
    follower = replicas[leaders.index(0.0)]
    assert '"leader": false' in follower.log()
    async with grpc.aio.insecure_channel(follower.address) as channel:
        stub = workmanager_pb2_grpc.WorkManagerStub(channel)
        listed = await stub.ListWorkers(
            workmanager_pb2.ListWorkersRequest(), metadata=(("x-api-key", API_KEY),)
        )
        assert [(w.id, w.status) for w in listed.workers] == [
            (worker_id, workmanager_pb2.WORKER_STATUS_RUNNING)
        ]
        again = await stub.RecoverWorkers(
            workmanager_pb2.RecoverWorkersRequest(), metadata=(("x-api-key", API_KEY),)
        )
        assert not again.leader  # the lease is the leader's for its TTL
    assert f'"replica": "{leader.env["VIRTUFIN_REPLICA_ID"]}"' in leader.log()


async def test_sigterm_ends_streams_and_exits_cleanly(cluster: Cluster) -> None:
    gateway = cluster.start("gateway")
    gateway.wait_serving()
    async with AsyncClient(cluster.gateway_address, api_key=API_KEY) as client:
        stream = await client.gateway.subscribe(topics=["itest.infra.shutdown"])
        gateway.signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            rest = [event async for event in stream]
        assert rest == []
    assert gateway.wait(timeout=15) == 0
    assert gateway.health() is None
    log = gateway.log()
    assert "shutting down gracefully" in log
    assert '"msg": "stopped"' in log


async def test_a_dead_backend_is_retried_then_cut_off_by_the_circuit_breaker(
    cluster: Cluster,
) -> None:
    workmanager = cluster.start("workmanager")
    gateway = cluster.start("gateway")
    workmanager.wait_serving()
    gateway.wait_serving()
    async with AsyncClient(cluster.gateway_address, api_key=API_KEY) as client:
        await client.gateway.workmanager.ListWorkers()  # the schema is cached now
        workmanager.kill9()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ClientError) as caught:
            await client.gateway.workmanager.ListWorkers()
        assert caught.value.backend
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        assert loop.time() - started >= 0.6  # 3 attempts: 200 ms, then 400 ms apart
        with pytest.raises(ClientError):
            await client.gateway.workmanager.ListWorkers()  # failures 4-6: the circuit opens
        started = loop.time()
        with pytest.raises(ClientError) as caught:
            await client.gateway.workmanager.ListWorkers()
        assert "circuit open" in caught.value.message
        assert loop.time() - started < 0.2  # refused without trying the backend
        status, metrics = gateway.http("/metrics")
        assert status == 200
        circuit = f'virtufin_gateway_backend_circuit{{address="{workmanager.address}",'
        assert f'{circuit}backend="workmanager"}} 1.0' in metrics

        cluster.start("workmanager", label="workmanager-back").wait_serving()
        await _until_answering(client)  # SERVING again closes the circuit


async def test_an_idle_pubsub_stream_is_swept(cluster: Cluster) -> None:
    gateway = cluster.start("gateway", env={"VIRTUFIN_PUBSUB_IDLE_SECONDS": "0.5"})
    gateway.wait_serving()
    async with AsyncClient(cluster.gateway_address, api_key=API_KEY) as client:
        stream = await client.pubsub.subscribe("itest.infra.idle")
        async with asyncio.timeout(10):
            rest = [event async for event in stream]
        assert rest == []
        assert not await client.pubsub.unsubscribe(stream.subscription_id)
    assert "sweeping idle subscription" in gateway.log()


def _local_workers(replica: ServiceProcess) -> float:
    """How many workers `replica` has in its supervisor (any state)."""
    status, text = replica.http("/metrics")
    assert status == 200
    return sum(
        _metric(text, f'virtufin_workmanager_workers{{state="{state}"}}')
        for state in ("created", "running", "stopped", "failed")
    )


def _candle(venue: str, close: float, day: int) -> Envelope:
    when = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=day)
    return candle(venue, "BTCUSDT", close, when, source="urn:com.virtufin.itest")


async def test_deleting_a_worker_on_another_replica_leaves_no_snapshot(cluster: Cluster) -> None:
    """DeleteWorker on replica A of a stateful worker running on replica B: once B stopped it,
    its snapshot is gone, although bars kept arriving (each one snapshotted) until B heard of
    the deletion. Whether a bar lands between A's delete and B's stop is a race: a few
    rounds make it all but certain that one does."""
    metadata = (("x-api-key", API_KEY),)
    a = cluster.start("workmanager", env={"VIRTUFIN_REPLICA_ID": "wm-a"}, label="wm-a")
    b = cluster.start(
        "workmanager", port=free_port(), env={"VIRTUFIN_REPLICA_ID": "wm-b"}, label="wm-b"
    )
    a.wait_serving()
    b.wait_serving()
    store = SqliteStateStore(cluster.root / "state" / "state.sqlite3")
    bus = await NatsBus.connect(name=f"itest-{group_name('snapdel')}")
    day = 0

    async def publish(venue: str) -> None:
        nonlocal day
        day += 1
        await bus.publish(topics.bar(venue, "BTCUSDT"), _candle(venue, 100.0 + day, day))

    async def flood(venue: str) -> None:  # every bar changes the worker's state: a save
        while True:
            await publish(venue)
            await asyncio.sleep(0.002)

    came_back = []
    try:
        for round_ in range(6):
            label = group_name(f"snapdel{round_}")
            worker_id = f"sma-{label[-13:]}".lower()
            venue = f"it{label[-14:].replace('-', '')}".lower()
            key = statekeys.worker_snapshot(worker_id)
            async with grpc.aio.insecure_channel(b.address) as channel:
                await workmanager_pb2_grpc.WorkManagerStub(channel).CreateWorker(
                    workmanager_pb2.CreateWorkerRequest(
                        id=worker_id,
                        code_source=workmanager_pb2.CodeSource(
                            url="workers/sma_cross/manifest.json"
                        ),
                        topic=topics.bar(venue, "BTCUSDT"),
                        group=label,
                        parameters_json=json.dumps({"fast": 2, "slow": 3}),
                        start=True,
                    ),
                    metadata=metadata,
                )
            async with asyncio.timeout(15):
                while await store.get(key) is None:
                    await publish(venue)
                    await asyncio.sleep(0.05)
            flooding = asyncio.create_task(flood(venue))
            try:
                await asyncio.sleep(0.1)
                async with grpc.aio.insecure_channel(a.address) as channel:
                    deleted = await workmanager_pb2_grpc.WorkManagerStub(channel).DeleteWorker(
                        workmanager_pb2.DeleteWorkerRequest(id=worker_id), metadata=metadata
                    )
                assert deleted.deleted
                for _ in range(300):  # B hears of it and forgets the worker
                    if not await asyncio.to_thread(_local_workers, b):
                        break
                    await asyncio.sleep(0.05)
                else:
                    pytest.fail(f"replica B still runs {worker_id}")
                await asyncio.sleep(0.1)
            finally:
                flooding.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flooding
            await asyncio.sleep(0.2)
            if await store.get(key) is not None:
                came_back.append(round_)
        assert came_back == []
    finally:
        await bus.close()
        await store.close()
