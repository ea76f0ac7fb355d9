"""DaprBus against the sidecar stand-in: what goes over the wire, and what comes back.

The shared behaviour (delivery, wildcards, groups, dead letters, de-duplication) is in
``tests/contract/test_bus_contract.py``; these tests look at the Dapr messages themselves.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime

import pytest
from dapr.aio.clients import DaprClient
from standins.dapr_sidecar_standin import DaprSidecarStandIn

from virtufin import topics
from virtufin.bus.dapr import SAVED_EXTENSION, DaprBus
from virtufin.bus.port import Delivery
from virtufin.envelope import CONTENT_TYPE_STRUCTURED, Envelope, to_dict
from virtufin.errors import BusError, PublishRejectedError

TOPIC = "act.exchange.binance.trade.tick.BTCUSDT"
PATTERN = "act.exchange.binance.>"


class Inbox:
    def __init__(self, *, fail: bool = False) -> None:
        self.events: list[tuple[Envelope, Delivery]] = []
        self.fail = fail

    async def __call__(self, envelope: Envelope, delivery: Delivery) -> None:
        self.events.append((envelope, delivery))
        if self.fail:
            raise RuntimeError(f"cannot handle {envelope.id}")


def tick(**attrs: object) -> Envelope:
    return Envelope.new(
        type="com.virtufin.exchange.binance.trade.tick",
        source="urn:com.virtufin.marketdata",
        data={"price": 101.5, "qty": 2},
        time=datetime(2024, 3, 1, 21, 0, tzinfo=UTC),
        **attrs,
    )


# ------------------------------------------------------------------ publish


async def test_publish_sends_our_cloudevent_as_a_publish_event_request(
    bus: DaprBus, sidecar: DaprSidecarStandIn
) -> None:
    sent = tick(marketlane="act", extensions={"venueseq": 7})
    await bus.publish(TOPIC, sent)
    [request] = sidecar.published
    assert request.pubsub_name == "pubsub"
    assert request.topic == TOPIC
    assert request.data_content_type == CONTENT_TYPE_STRUCTURED
    assert json.loads(request.data) == to_dict(sent)  # nothing for Dapr to undo here
    stored = sidecar.broker[0].cloud_event()
    assert stored["id"] == sent.id
    assert stored["source"] == sent.source
    assert (stored["topic"], stored["pubsubname"]) == (TOPIC, "pubsub")  # added by the sidecar


async def test_the_envelopes_traceparent_is_continued_and_restored(
    bus: DaprBus, sidecar: DaprSidecarStandIn
) -> None:
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    sent = tick(traceparent=parent)
    inbox = Inbox()
    await bus.subscribe(PATTERN, inbox)
    await bus.publish(TOPIC, sent)
    await sidecar.wait_until(lambda: len(inbox.events) == 1)
    stored = sidecar.broker[0].cloud_event()
    trace_id = parent.split("-")[1]
    assert stored["traceparent"].split("-")[1] == trace_id  # the publish span is a child
    assert stored["traceparent"] != parent  # … so the sidecar overwrote the attribute
    assert json.loads(stored[SAVED_EXTENSION]) == {"traceparent": parent}
    assert inbox.events[0][0] == sent


async def test_dapr_refusing_a_publish_raises_publish_rejected(
    bus: DaprBus, sidecar: DaprSidecarStandIn
) -> None:
    sidecar.deny_publish(TOPIC)
    with pytest.raises(PublishRejectedError, match="PERMISSION_DENIED") as caught:
        await bus.publish(TOPIC, tick())
    assert caught.value.topic == TOPIC
    assert sidecar.broker == []


async def test_an_unknown_pubsub_component_is_refused(sidecar: DaprSidecarStandIn) -> None:
    bus = DaprBus(pubsub_name="nosuch", dapr_address=sidecar.address)
    try:
        with pytest.raises(PublishRejectedError, match="pubsub nosuch is not found"):
            await bus.publish(TOPIC, tick())
    finally:
        await bus.close()


async def test_lane_validation_runs_before_dapr_is_called(
    bus: DaprBus, sidecar: DaprSidecarStandIn
) -> None:
    with pytest.raises(PublishRejectedError, match="MUST NOT carry a selector"):
        await bus.publish("act.EQ_2008.exchange.binance.trade.tick", tick())
    assert sidecar.published == []


async def test_an_unreachable_sidecar_is_a_bus_error_not_a_refusal(
    bus: DaprBus, sidecar: DaprSidecarStandIn
) -> None:
    await bus.publish(TOPIC, tick())
    await sidecar.stop()
    with pytest.raises(BusError) as caught:
        await bus.publish(TOPIC, tick())
    assert not isinstance(caught.value, PublishRejectedError)
    assert "UNAVAILABLE" in str(caught.value)


# ------------------------------------------------------------------ delivery


async def test_the_stand_in_delivers_a_topic_event_request_as_daprd_fills_it(
    bus: DaprBus, sidecar: DaprSidecarStandIn
) -> None:
    sent = tick(subject="BTCUSDT", extensions={"venueseq": 7})
    inbox = Inbox()
    await bus.subscribe(PATTERN, inbox)
    assert sidecar.subscriptions == [("pubsub", PATTERN, "")]  # no Dapr dead-letter topic
    await bus.publish(TOPIC, sent)
    await sidecar.wait_until(lambda: len(sidecar.deliveries) == 1)  # recorded once answered
    [record] = sidecar.deliveries
    request = record.request
    assert (request.id, request.source, request.type) == (sent.id, sent.source, sent.type)
    assert (request.spec_version, request.data_content_type) == ("1.0", "application/json")
    assert json.loads(request.data) == sent.data
    assert (request.topic, request.pubsub_name) == (PATTERN, "pubsub")  # the subscribed name
    extensions = dict(request.extensions)
    assert extensions["topic"] == TOPIC  # the concrete topic, set by the publishing sidecar
    assert extensions["venueseq"] == 7.0  # a protobuf Struct: numbers are doubles
    assert (extensions["subject"], extensions["time"]) == ("BTCUSDT", "2024-03-01T21:00:00Z")
    assert record.outcome == "success"
    assert inbox.events == [(sent, Delivery(TOPIC, 1, None))]


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b"\x00\x01binary", "application/octet-stream"),
        (b'{"looks": "like json"}', "application/json"),  # bytes stay bytes
        ("plain text", "text/plain"),
        ("", "text/plain"),
        ({"a": [1, 2]}, "application/vnd.virtufin.order+json"),  # Dapr would drop this data
        ({"a": 1}, None),
        ("not text", "text/csv"),
        ({"not": "text"}, "text/plain"),  # Dapr would refuse this data forever
        (None, "application/json"),
    ],
)
async def test_every_kind_of_data_comes_back_equal(
    bus: DaprBus, sidecar: DaprSidecarStandIn, data: object, content_type: str | None
) -> None:
    sent = tick().with_changes(data=data, datacontenttype=content_type)
    inbox = Inbox()
    await bus.subscribe(TOPIC, inbox)
    await bus.publish(TOPIC, sent)
    await sidecar.wait_until(lambda: len(inbox.events) == 1)
    assert inbox.events[0][0] == sent


async def test_an_envelope_without_time_or_with_dapr_named_extensions_comes_back_equal(
    bus: DaprBus, sidecar: DaprSidecarStandIn
) -> None:
    sent = tick(extensions={"topic": "mine", "tracestate": "k=v"}).with_changes(time=None)
    inbox = Inbox()
    await bus.subscribe(TOPIC, inbox)
    await bus.publish(TOPIC, sent)
    await sidecar.wait_until(lambda: len(inbox.events) == 1)
    received, delivery = inbox.events[0]
    assert received == sent
    assert delivery.topic == TOPIC


async def test_subscribers_of_one_pattern_share_one_dapr_stream(
    bus: DaprBus, sidecar: DaprSidecarStandIn
) -> None:
    first, second = Inbox(), Inbox()
    one = await bus.subscribe(PATTERN, first)
    two = await bus.subscribe(PATTERN, second, group="g")
    assert len(sidecar.subscriptions) == 1
    await bus.publish(TOPIC, tick())
    await sidecar.wait_until(lambda: len(first.events) == len(second.events) == 1)
    await one.unsubscribe()
    assert len(sidecar.subscriptions) == 1
    await two.unsubscribe()
    await sidecar.wait_until(lambda: sidecar.subscriptions == [])


async def test_foreign_events_wrapped_by_dapr_are_delivered(
    bus: DaprBus, sidecar: DaprSidecarStandIn
) -> None:
    inbox = Inbox()
    await bus.subscribe(TOPIC, inbox)
    async with DaprClient(address=sidecar.address) as client:  # another app, not our bus
        await client.publish_event(
            pubsub_name="pubsub",
            topic_name=TOPIC,
            data=b'{"price": 1}',
            data_content_type="application/json",
        )
    await sidecar.wait_until(lambda: len(inbox.events) == 1)
    received, delivery = inbox.events[0]
    assert (received.type, received.source) == ("com.dapr.event.sent", sidecar.app_id)
    assert received.data == {"price": 1}
    assert delivery.topic == TOPIC


# ------------------------------------------------------------------ failures


async def test_a_failing_handler_gets_retry_then_is_dead_lettered_with_the_reason(
    bus: DaprBus, sidecar: DaprSidecarStandIn
) -> None:
    dead, failing = Inbox(), Inbox(fail=True)
    await bus.subscribe(topics.DEAD_LETTER, dead)
    await bus.subscribe(TOPIC, failing, max_deliveries=3, group="risk")
    sent = tick()
    await bus.publish(TOPIC, sent)
    await sidecar.wait_until(lambda: len(dead.events) == 1)
    await sidecar.wait_until(
        lambda: (
            [r.outcome for r in sidecar.deliveries if r.request.topic == TOPIC]
            == ["retry", "retry", "success"]
        )
    )
    assert [d.attempt for _, d in failing.events] == [1, 2, 3]
    letter, delivery = dead.events[0]
    assert delivery.topic == topics.DEAD_LETTER
    assert (letter.id, letter.data) == (sent.id, sent.data)
    assert letter.extensions == {
        "dltopic": TOPIC,
        "dlreason": f"RuntimeError: cannot handle {sent.id}",
        "dlattempts": 3,
        "dlgroup": "risk",
    }
    assert bus.dead_letters == 1


async def test_attempts_are_counted_across_redeliveries_of_the_component(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with DaprSidecarStandIn(retries=0, redeliveries=5) as sidecar:
        for name, value in sidecar.environ().items():
            monkeypatch.setenv(name, value)
        bus = DaprBus(pubsub_name="pubsub", dapr_address=sidecar.address)
        try:
            dead, failing = Inbox(), Inbox(fail=True)
            await bus.subscribe(topics.DEAD_LETTER, dead)
            await bus.subscribe(TOPIC, failing, max_deliveries=4)
            await bus.publish(TOPIC, tick())
            await sidecar.wait_until(lambda: len(dead.events) == 1)
            assert [d.attempt for _, d in failing.events] == [1, 2, 3, 4]
            assert dead.events[0][0].extensions["dlattempts"] == 4
        finally:
            await bus.close()


async def test_an_undecodable_event_is_dead_lettered_with_its_reason_and_dropped(
    bus: DaprBus, sidecar: DaprSidecarStandIn
) -> None:
    dead, inbox = Inbox(), Inbox()
    await bus.subscribe(topics.DEAD_LETTER, dead)
    await bus.subscribe(TOPIC, inbox)
    garbage = {"specversion": "1.0", "id": "g-1", "source": "urn:x", "type": "t", "marketlane": "x"}
    sidecar.broker_publish("pubsub", TOPIC, json.dumps(garbage).encode())
    await sidecar.wait_until(lambda: len(dead.events) == 1)
    assert inbox.events == []
    await sidecar.wait_until(
        lambda: [r.outcome for r in sidecar.deliveries if r.request.topic == TOPIC] == ["drop"]
    )
    letter = dead.events[0][0]
    assert letter.type == topics.EventTypes.DEAD_LETTER
    assert letter.extensions["dltopic"] == TOPIC
    assert "marketlane" in letter.extensions["dlreason"]
    assert letter.data["id"] == "g-1"
    assert letter.data["extensions"]["marketlane"] == "x"
    await asyncio.sleep(0.2)
    assert len(dead.events) == 1  # dropped: not redelivered, not dead-lettered twice


async def test_bytes_that_are_no_cloudevent_never_reach_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """daprd itself cannot parse them: it retries them with the component, then gives up."""
    async with DaprSidecarStandIn(redeliveries=1) as sidecar:
        for name, value in sidecar.environ().items():
            monkeypatch.setenv(name, value)
        bus = DaprBus(pubsub_name="pubsub", dapr_address=sidecar.address)
        try:
            inbox = Inbox()
            await bus.subscribe(TOPIC, inbox)
            sidecar.broker_publish("pubsub", TOPIC, b"\xff not json")
            await sidecar.wait_until(lambda: len(sidecar.undeliverable) == 1)
            assert inbox.events == []
            assert sidecar.deliveries == []
        finally:
            await bus.close()


async def test_handler_results_are_remembered_per_subscriber_across_a_retry(
    bus: DaprBus, sidecar: DaprSidecarStandIn
) -> None:
    """One subscriber failing makes Dapr redeliver; the one that succeeded is not re-run."""
    steady, flaky_calls = Inbox(), []

    async def flaky(envelope: Envelope, delivery: Delivery) -> None:
        flaky_calls.append(delivery.attempt)
        if delivery.attempt == 1:
            raise RuntimeError("first time")

    await bus.subscribe(PATTERN, steady)
    await bus.subscribe(PATTERN, flaky)
    await bus.publish(TOPIC, tick())
    await sidecar.wait_until(
        lambda: [r.outcome for r in sidecar.deliveries] == ["retry", "success"]
    )
    assert flaky_calls == [1, 2]
    assert len(steady.events) == 1


# ------------------------------------------------------------------ base64 check


async def test_binary_data_travels_as_data_base64(
    bus: DaprBus, sidecar: DaprSidecarStandIn
) -> None:
    sent = tick().with_changes(data=b"\x00\xff", datacontenttype="application/octet-stream")
    await bus.publish(TOPIC, sent)
    body = json.loads(sidecar.published[0].data)
    assert body["data_base64"] == base64.b64encode(b"\x00\xff").decode()
    assert "data" not in body


async def test_a_sidecar_that_never_gets_healthy_is_a_bus_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAPR_HTTP_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", "1")
    bus = DaprBus(pubsub_name="pubsub", dapr_address="127.0.0.1:9")
    with pytest.raises(BusError, match="not healthy"):
        await bus.start()
    await bus.close()
