"""The stand-in itself, driven by the plain Dapr SDK: does it behave as daprd does?

These pin the daprd behaviours the adapters rely on (see the stand-in's docstring for the
sources), so that a wrong assumption shows up here rather than as a passing adapter test.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import AsyncIterator

import grpc
import pytest
from dapr.aio.clients import DaprClient
from dapr.clients.grpc._request import TransactionalStateOperation
from dapr.clients.grpc._response import TopicEventResponse
from dapr.clients.grpc._state import StateItem
from dapr.ext.grpc import App, SubscriptionMessage
from standins.dapr_sidecar_standin import DaprSidecarStandIn, nats_match


@pytest.fixture
async def client(sidecar: DaprSidecarStandIn) -> AsyncIterator[DaprClient]:
    async with DaprClient(address=sidecar.address) as opened:
        yield opened


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        ("*.b.>", "x.b.c", True),
        (">", "a", True),
        ("a.b", "a.b.c", False),
    ],
)
def test_nats_subject_matching(pattern: str, subject: str, expected: bool) -> None:
    assert nats_match(pattern, subject) is expected


@pytest.mark.parametrize(
    ("content_type", "payload", "field", "value"),
    [
        ("application/json", b'{"a": 1}', "data", {"a": 1}),
        ("", b"hello", "data", "hello"),
        ("application/octet-stream", b"\x00\x01", "data_base64", "AAE="),
    ],
)
async def test_a_payload_that_is_no_cloudevent_is_wrapped(
    client: DaprClient,
    sidecar: DaprSidecarStandIn,
    content_type: str,
    payload: bytes,
    field: str,
    value: object,
) -> None:
    await client.publish_event(
        pubsub_name="pubsub", topic_name="orders", data=payload, data_content_type=content_type
    )
    event = sidecar.broker[0].cloud_event()
    assert event[field] == value
    assert (event["type"], event["source"]) == ("com.dapr.event.sent", sidecar.app_id)
    assert event["datacontenttype"] == (content_type or "text/plain")
    assert (event["topic"], event["pubsubname"], event["specversion"]) == (
        "orders",
        "pubsub",
        "1.0",
    )
    assert event["traceparent"] == event["traceid"]


async def test_raw_payloads_are_stored_as_sent_and_wrapped_for_raw_subscribers(
    client: DaprClient, sidecar: DaprSidecarStandIn
) -> None:
    stream = await client.subscribe(
        pubsub_name="pubsub", topic="raw", metadata={"rawPayload": "true"}
    )
    try:
        await client.publish_event(
            pubsub_name="pubsub",
            topic_name="raw",
            data=b"\x01\x02",
            publish_metadata={"rawPayload": "true"},
        )
        assert sidecar.broker[0].data == b"\x01\x02"
        message = await stream.next_message()
        assert message.raw_data() == b"\x01\x02"
        assert message.data_content_type() == "application/octet-stream"
        await stream.respond_success(message)
    finally:
        await stream.close()


async def test_drop_goes_to_the_dead_letter_topic_with_the_broker_bytes(
    client: DaprClient, sidecar: DaprSidecarStandIn
) -> None:
    stream = await client.subscribe(pubsub_name="pubsub", topic="work", dead_letter_topic="dlq")
    try:
        await client.publish_event(pubsub_name="pubsub", topic_name="work", data=b"{}")
        message = await stream.next_message()
        await stream.respond_drop(message)
        await sidecar.wait_until(lambda: len(sidecar.broker) == 2)
        original, dead = sidecar.broker
        assert (dead.topic, dead.data) == ("dlq", original.data)
    finally:
        await stream.close()


async def test_retries_are_spent_then_the_dead_letter_topic_gets_the_event(
    client: DaprClient, sidecar: DaprSidecarStandIn
) -> None:
    stream = await client.subscribe(pubsub_name="pubsub", topic="work", dead_letter_topic="dlq")
    try:
        await client.publish_event(pubsub_name="pubsub", topic_name="work", data=b"{}")
        for _ in range(1 + sidecar.retries):
            await stream.respond_retry(await stream.next_message())
        await sidecar.wait_until(lambda: [m.topic for m in sidecar.broker] == ["work", "dlq"])
        assert [r.outcome for r in sidecar.deliveries] == ["retry"] * (1 + sidecar.retries)
    finally:
        await stream.close()


async def test_without_wildcards_topics_are_exact_names(monkeypatch: pytest.MonkeyPatch) -> None:
    async with DaprSidecarStandIn(subject_wildcards=False) as sidecar:
        for name, value in sidecar.environ().items():
            monkeypatch.setenv(name, value)
        async with DaprClient(address=sidecar.address) as client:
            stream = await client.subscribe(pubsub_name="pubsub", topic="a.*")
            try:
                await client.publish_event(pubsub_name="pubsub", topic_name="a.b", data=b"1")
                await client.publish_event(pubsub_name="pubsub", topic_name="a.*", data=b"2")
                message = await stream.next_message()
                assert message.raw_data() == b"2"
                await stream.respond_success(message)
            finally:
                await stream.close()


async def test_subscribing_to_an_unknown_pubsub_fails(client: DaprClient) -> None:
    with pytest.raises(grpc.RpcError, match="pubsub nosuch is not found"):
        await client.subscribe(pubsub_name="nosuch", topic="t")


async def test_state_etag_mismatch_is_aborted_but_internal_in_a_transaction(
    client: DaprClient,
) -> None:
    await client.save_bulk_state(store_name="statestore", states=[StateItem("k", b"1")])
    etag = (await client.get_state(store_name="statestore", key="k")).etag
    await client.save_bulk_state(store_name="statestore", states=[StateItem("k", b"2", etag=etag)])
    with pytest.raises(grpc.RpcError) as saved:
        await client.save_bulk_state(
            store_name="statestore", states=[StateItem("k", b"3", etag=etag)]
        )
    assert saved.value.code() == grpc.StatusCode.ABORTED
    assert "possible etag mismatch" in saved.value.details()
    with pytest.raises(grpc.RpcError) as transacted:
        await client.execute_state_transaction(
            store_name="statestore",
            operations=[
                TransactionalStateOperation(key="other", data=b"1"),
                TransactionalStateOperation(key="k", data=b"4", etag=etag),
            ],
        )
    assert transacted.value.code() == grpc.StatusCode.INTERNAL
    assert "possible etag mismatch" in transacted.value.details()
    missing = await client.get_state(store_name="statestore", key="other")
    assert missing.data == b""  # all or nothing
    assert json.loads((await client.get_state(store_name="statestore", key="k")).data) == 2


async def test_base64_in_a_cloudevent_reaches_the_app_decoded(
    client: DaprClient, sidecar: DaprSidecarStandIn
) -> None:
    stream = await client.subscribe(pubsub_name="pubsub", topic="bin")
    try:
        event = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
        event["data_base64"] = base64.b64encode(b"\xff").decode()
        await client.publish_event(
            pubsub_name="pubsub",
            topic_name="bin",
            data=json.dumps(event),
            data_content_type="application/cloudevents+json",
        )
        message = await stream.next_message()
        assert message.raw_data() == b"\xff"
        assert message.extensions()["topic"] == "bin"
        await stream.respond_success(message)
    finally:
        await stream.close()


async def test_an_app_callback_app_gets_on_topic_event_as_daprd_sends_it(
    client: DaprClient, sidecar: DaprSidecarStandIn
) -> None:
    """The SDK's own ``App`` as the app: subscriptions listed once, events via OnTopicEvent."""
    received: list[SubscriptionMessage] = []
    app = App()

    @app.subscribe(pubsub_name="pubsub", topic="orders", dead_letter_topic="orders.dead")
    def orders(event: SubscriptionMessage) -> TopicEventResponse:
        received.append(event)
        return TopicEventResponse("retry" if len(received) == 1 else "drop")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    thread = threading.Thread(target=app.run, args=(port, "127.0.0.1"), daemon=True)
    thread.start()
    try:
        taken = await sidecar.connect_app(f"127.0.0.1:{port}")
        assert taken == [("pubsub", "orders", "orders.dead")]
        await client.publish_event(
            pubsub_name="pubsub",
            topic_name="orders",
            data=b'{"qty": 1}',
            data_content_type="application/json",
        )
        await sidecar.wait_until(
            lambda: [m.topic for m in sidecar.broker] == ["orders", "orders.dead"]
        )
        assert [r.outcome for r in sidecar.deliveries] == ["retry", "drop"]
        first = received[0]
        assert (first.topic(), first.pubsub_name(), first.data()) == (
            "orders",
            "pubsub",
            {"qty": 1},
        )
        assert first.extensions()["topic"] == "orders"
    finally:
        app.stop()
        thread.join(timeout=5)
