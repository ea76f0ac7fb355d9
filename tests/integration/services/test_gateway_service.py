"""The gateway and the WorkManager as real processes on NATS, driven through the Python client."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from svc_cluster import API_KEY, REPO, Cluster, echo_topics, group_name

from virtufin.client import AsyncClient, Client, ClientError, Event
from virtufin.envelope import Envelope
from virtufin.errors import ConcurrencyError
from virtufin.proto import ensure_built

ensure_built()
from virtufin.proto.gen import (  # noqa: E402
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    workmanager_pb2,
    workmanager_pb2_grpc,
)

pytestmark = [pytest.mark.nats, pytest.mark.slow]

ECHO_MANIFEST = "workers/echo/manifest.json"
LIFECYCLE = "com.virtufin.workmanager.lifecycle."


def _ping() -> Envelope:
    return Envelope.new(
        type="com.virtufin.echo.command", source="urn:com.virtufin.itest", data={"command": "ping"}
    )


async def _events_until(
    stream: object, wanted: list[str], *, worker_id: str, within_s: float = 15.0
) -> list[str]:
    """Lifecycle suffixes seen for `worker_id` until `wanted` appeared in order."""
    seen: list[str] = []
    async with asyncio.timeout(within_s):
        async for event in stream:  # type: ignore[attr-defined]
            assert isinstance(event, Event)
            data = event.envelope.data
            if isinstance(data, dict) and data.get("worker_id") == worker_id:
                seen.append(event.envelope.type.removeprefix(LIFECYCLE))
                it = iter(seen)
                if all(any(s == w for s in it) for w in wanted):
                    return seen
    return seen


def test_every_service_answers_health_and_lists_its_services_by_reflection(
    running: Cluster,
) -> None:
    expected = {
        "gateway": {"virtufin.Gateway", "virtufin.State", "virtufin.Pubsub", "virtufin.Config"},
        "workmanager": {"virtufin.WorkManager"},
    }
    for process in running.processes:
        with grpc.insecure_channel(process.address) as channel:  # no API key: both are open
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            for name in expected[process.name]:
                per_service = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=name)
                )
                assert per_service.status == health_pb2.HealthCheckResponse.SERVING
            services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert (
            expected[process.name]
            | {
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            }
            <= services
        )
        status, body = process.http("/healthz")
        assert (status, body.strip()) == (200, "SERVING")
        status, body = process.http("/metrics")
        assert status == 200
        assert "virtufin_grpc_server_handled_total" in body
        assert "virtufin_service_serving 1.0" in body


async def test_a_missing_or_wrong_api_key_is_refused_with_unauthenticated(
    running: Cluster,
) -> None:
    for key in ("", "wrong-key"):
        async with AsyncClient(running.gateway_address, api_key=key) as client:
            with pytest.raises(ClientError) as caught:
                await client.gateway.list_services()
            assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
            assert "x-api-key" in caught.value.message
            with pytest.raises(ClientError) as caught:
                await client.state.get("gateway", "scenario.index")
            assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
    workmanager = next(p for p in running.processes if p.name == "workmanager")
    async with grpc.aio.insecure_channel(workmanager.address) as channel:
        stub = workmanager_pb2_grpc.WorkManagerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListWorkers(workmanager_pb2.ListWorkersRequest())
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        answered = await stub.ListWorkers(
            workmanager_pb2.ListWorkersRequest(), metadata=(("x-api-key", API_KEY),)
        )
        assert isinstance(answered, workmanager_pb2.ListWorkersResponse)


async def test_malformed_requests_get_invalid_argument_with_a_message(running: Cluster) -> None:
    async with AsyncClient(running.gateway_address, api_key=API_KEY) as client:
        cases = {
            "InvokeJson bad JSON": client.gateway.invoke_json("workmanager", "ListWorkers", "{x"),
            "InvokeJson wrong field": client.gateway.invoke_json(
                "workmanager", "ListWorkers", {"no_such_field": 1}
            ),
            "SaveState non-JSON": client.state._stub.SaveState(  # raw bytes, not JSON
                gateway_pb2.SaveStateRequest(service="gateway", key="k", value=b"{not json"),
                metadata=(("x-api-key", API_KEY),),
            ),
            "PublishEvent bad topic": client.pubsub.publish("not a topic", _ping()),
            "PublishEvent selector on act": client.pubsub.publish(
                "act.exchange.binance.trade.tape.BTCUSDT",
                _ping().with_changes(marketselector="EQ_2008"),
            ),
            "Subscribe bad pattern": client.gateway.subscribe(topics=["a.>.b"]),
        }
        for label, call in cases.items():
            with pytest.raises((ClientError, grpc.aio.AioRpcError)) as caught:
                await call
            error = caught.value
            code = error.code if isinstance(error, ClientError) else error.code()
            message = error.message if isinstance(error, ClientError) else error.details()
            assert code is grpc.StatusCode.INVALID_ARGUMENT, label
            assert message, label
        with pytest.raises(ClientError) as caught:
            await client.pubsub.publish(
                "act.exchange.binance.trade.tape.BTCUSDT",
                _ping().with_changes(marketselector="EQ_2008"),
            )
        assert "act topics MUST NOT carry a selector" in caught.value.message
        with pytest.raises(ClientError) as caught:  # the backend refuses, reported in-band
            await client.gateway.workmanager.CreateWorker(
                {"id": "Not Valid", "code_source": {"url": ECHO_MANIFEST}}
            )
        assert caught.value.backend
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "must match" in caught.value.message
        with pytest.raises(ClientError) as caught:  # the request size limit (4 MiB)
            await client.state.save("gateway", "big", "x" * (5 * 1024 * 1024))
        assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(ClientError) as caught:
            await client.pubsub.publish("sc.NOT_REGISTERED.trading.order.submitted", _ping())
        assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED


async def test_get_all_state_registered_keys_and_etag_conflicts(running: Cluster) -> None:
    async with AsyncClient(running.gateway_address, api_key=API_KEY) as client:
        changes = await client.gateway.subscribe(topics=["state-changes"])
        first = await client.state.save("gateway", "itest.a", {"n": 1}, include_value=True)
        await client.state.save("gateway", "itest.b", {"n": 2})
        assert await client.state.register_keys("gateway", ["itest.c", "itest.a"]) == 1
        items = {i.key: i for i in await client.state.get_all("gateway", prefix="itest.")}
        assert {k: i.value for k, i in items.items()} == {"itest.a": {"n": 1}, "itest.b": {"n": 2}}
        registered = {i.key for i in await client.state.get_all("gateway")}
        assert {"itest.a", "itest.b", "scenario.index"} <= registered

        second = await client.state.save("gateway", "itest.a", {"n": 3}, etag=first)
        with pytest.raises(ConcurrencyError):
            await client.state.save("gateway", "itest.a", {"n": 4}, etag=first)
        with pytest.raises(ConcurrencyError):
            await client.state.delete("gateway", "itest.a", etag=first)
        found = await client.state.get("gateway", "itest.a")
        assert found is not None
        assert (found.value, found.etag) == ({"n": 3}, second)
        assert await client.state.delete("gateway", "itest.a", etag=second)
        assert not await client.state.delete("gateway", "itest.a")
        assert await client.state.get("gateway", "itest.a") is None

        async with asyncio.timeout(10):
            event = await anext(changes)
        await changes.aclose()
        assert event.topic == "state-changes"
        assert event.envelope.data == {
            "service": "gateway",
            "key": "itest.a",
            "action": "save",
            "value": {"n": 1},
        }
        assert event.envelope.traceparent is not None


async def test_a_worker_is_created_started_reloaded_stopped_and_deleted_through_the_gateway(
    running: Cluster,
) -> None:
    worker_id = f"echo-{group_name('lifecycle')[-12:]}".lower()
    requests, replies = echo_topics("lifecycle")
    async with AsyncClient(running.gateway_address, api_key=API_KEY) as client:
        stream = await client.gateway.subscribe(
            services=["workmanager"], topics=["workmanager.lifecycle"]
        )
        created = await client.gateway.workmanager.CreateWorker(
            {
                "id": worker_id,
                "code_source": {"url": ECHO_MANIFEST},
                "topic": requests,
                "group": group_name("lifecycle"),
                "tags": {"suite": "itest"},
                "env": {"GREETING": "hello"},
            }
        )
        assert created["worker"]["status"] == "WORKER_STATUS_STOPPED"
        assert created["worker"]["topic"] == requests
        started = await client.workmanager.start_worker(worker_id)
        assert started.status == workmanager_pb2.WORKER_STATUS_RUNNING

        reply = await client.publish_with_result(requests, _ping(), reply_topic=replies, timeout=10)
        assert reply.data == {"command": "ping", "success": True, "message": "pong"}

        loaded = await client.gateway.workmanager.LoadCode(
            {"id": worker_id, "code_source": {"url": "workers.echo.worker:EchoWorker"}}
        )
        assert loaded["worker"]["status"] == "WORKER_STATUS_RUNNING"
        history = await client.workmanager.history(worker_id)
        assert [h.url for h in history] == ["workers.echo.worker:EchoWorker", ECHO_MANIFEST]

        listed = await client.gateway.workmanager.ListWorkers({"tags": {"suite": "itest"}})
        assert [w["id"] for w in listed["workers"]] == [worker_id]
        env = await client.gateway.workmanager.SetEnvironmentVariable(
            {"id": worker_id, "key": "MODE", "value": "live"}
        )
        assert env["env"] == {"GREETING": "hello", "MODE": "live"}

        stopped = await client.workmanager.stop_worker(worker_id)
        assert stopped.status == workmanager_pb2.WORKER_STATUS_STOPPED
        assert await client.workmanager.delete_worker(worker_id)
        assert not await client.workmanager.delete_worker(worker_id)

        seen = await _events_until(
            stream,
            ["registered", "starting", "online", "online", "stopping", "stopped"],
            worker_id=worker_id,
        )
        await stream.aclose()
        assert seen[:3] == ["registered", "starting", "online"]
        assert seen[-2:] == ["stopping", "stopped"]
        with pytest.raises(ClientError) as caught:
            await client.workmanager.start_worker(worker_id)
        assert caught.value.code is grpc.StatusCode.NOT_FOUND


async def test_a_script_worker_runs_from_inline_code(running: Cluster) -> None:
    script = (REPO / "workers/sma_cross/script.py").read_bytes()
    worker_id = f"sma-{group_name('script')[-12:]}".lower()
    async with AsyncClient(running.gateway_address, api_key=API_KEY) as client:
        created = await client.gateway.workmanager.CreateWorker(
            {
                "id": worker_id,
                "code_source": {"content": _b64(script)},
                "mime_type": "text/x-python",
                "topic": "hyp.*.exchange.binance.ohlcv.candle.1d.BTCUSDT",
                "group": group_name("script"),
                "parameters_json": json.dumps({"fast": 3, "slow": 5}),
                "start": True,
            }
        )
        worker = created["worker"]
        assert worker["status"] == "WORKER_STATUS_RUNNING", worker["last_error"]
        assert worker["version"].startswith("0.1.0-sha.")
        swapped = await client.gateway.workmanager.LoadCode(  # another engine, same worker
            {
                "id": worker_id,
                "code_source": {"url": "workers.echo.worker:EchoWorker"},
                "mime_type": "application/x-python-class",
            }
        )
        assert swapped["worker"]["mime_type"] == "application/x-python-class"
        assert swapped["worker"]["status"] == "WORKER_STATUS_RUNNING", swapped["worker"]
        assert len(await client.workmanager.history(worker_id)) == 2
        assert await client.workmanager.delete_worker(worker_id)


async def test_pubsub_streams_a_topic_until_unsubscribed(running: Cluster) -> None:
    async with AsyncClient(running.gateway_address, api_key=API_KEY) as client:
        stream = await client.pubsub.subscribe("itest.audit")
        sent = Envelope.new(type="com.virtufin.itest.audit.note", source="urn:itest", data=[1, 2])
        assert await client.pubsub.publish("itest.audit", sent) == sent.id
        async with asyncio.timeout(10):
            event = await anext(stream)
        assert (event.topic, event.envelope.id, event.envelope.data) == (
            "itest.audit",
            sent.id,
            [1, 2],
        )
        assert await client.pubsub.unsubscribe(stream.subscription_id)
        async with asyncio.timeout(10):
            rest = [e async for e in stream]
        assert rest == []
        assert not await client.pubsub.unsubscribe(stream.subscription_id)


def test_the_blocking_client_mirrors_the_async_one(running: Cluster) -> None:
    with Client(running.gateway_address, api_key=API_KEY) as client:
        names = [s.name for s in client.config.list_services()]
        assert names == ["gateway", "workmanager"]
        assert client.config.get_service("workmanager").grpc.port == running.workmanager_ports[0]
        schema = client.gateway.get_method_schema("workmanager", "CreateWorker")
        assert schema["input"]["properties"]["codeSource"] == {
            "$ref": "#/$defs/virtufin.CodeSource"
        }
        methods = {m.name for m in client.gateway.list_methods("workmanager")}
        assert {"CreateWorker", "StartWorker", "RecoverWorkers", "LoadCode"} <= methods
        assert client.gateway.workmanager.ListWorkers({"scenario_id": "NONE_SUCH"}) == {
            "workers": []
        }
        with client.gateway.subscribe(topics=["itest.infra.sync"]) as stream:
            with pytest.raises(TimeoutError):
                stream.next(timeout=0.2)  # nothing yet; the stream stays open
            event = Envelope.new(type="com.virtufin.itest.infra.sync", source="urn:itest")
            client.pubsub.publish("itest.infra.sync", event)
            assert stream.next(timeout=10).envelope.id == event.id


def test_the_gateway_routes_invoke_with_protobuf_bytes(running: Cluster) -> None:
    with grpc.insecure_channel(running.gateway_address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        reply = stub.Invoke(
            gateway_pb2.InvokeRequest(
                service="workmanager",
                method="virtufin.WorkManager/GetWorkerHistory",
                request_data=workmanager_pb2.GetWorkerHistoryRequest(
                    id="absent"
                ).SerializeToString(),
            ),
            metadata=(("x-api-key", API_KEY),),
        )
        assert not reply.success
        assert reply.status == grpc.StatusCode.NOT_FOUND.value[0]
        with pytest.raises(grpc.RpcError) as caught:
            stub.Invoke(
                gateway_pb2.InvokeRequest(service="nowhere", method="X"),
                metadata=(("x-api-key", API_KEY),),
            )
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        published = gateway_pb2_grpc.PubsubStub(channel).PublishEvent(
            gateway_pb2.PublishEventRequest(
                topic="itest.audit",
                cloudevent=common_pb2.CloudEvent(source="urn:itest", type="t", text_data="{}"),
            ),
            metadata=(("x-api-key", API_KEY),),
        )
        assert published.message_id


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()
