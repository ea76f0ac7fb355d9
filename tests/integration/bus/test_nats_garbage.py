"""(d) Garbage on the wire: raw nats-py publishes on a subscribed subject.

What happens: a message that is not JSON, one that is not UTF-8, one with the wrong
``specversion`` and one larger than the bus's event limit each go straight to
``bus.deadletter``, as an envelope of type ``com.virtufin.bus.deadletter`` whose binary data
is the raw bytes (cut so that the letter itself fits the limit) and whose ``dlreason`` says
why decoding failed; the original is terminated, not retried. The handler never sees them,
and the subscriber goes on to handle the next valid event.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from helpers.recording import Recorder, event, eventually

from virtufin import topics
from virtufin.bus.nats import NatsBus
from virtufin.envelope import Envelope, encode

pytestmark = pytest.mark.nats

LIMIT = 64 * 1024


@pytest.fixture
async def bus(nats_server: str) -> AsyncIterator[NatsBus]:
    opened = await NatsBus.connect(
        url=nats_server, name=f"garbage-{uuid.uuid4().hex[:8]}", max_event_bytes=LIMIT
    )
    try:
        yield opened
    finally:
        await opened.delete_consumers()
        await opened.close()


async def test_undecodable_messages_are_dead_lettered_and_the_subscriber_goes_on(
    bus: NatsBus,
) -> None:
    token = "t" + uuid.uuid4().hex[:12]
    topic = f"act.exchange.{token}.trade.tick"
    handler, dead = Recorder(), Recorder()
    await bus.subscribe(topics.DEAD_LETTER, dead)
    await bus.subscribe(f"act.exchange.{token}.>", handler, group="readers")

    wrong_version = {"specversion": "0.3", "id": "x1", "source": "urn:s", "type": "t"}
    garbage = {
        "not JSON": b"<html>{not json",
        "not UTF-8": b"\xff\xfe{",
        "specversion": json.dumps(wrong_version).encode(),
        "exceeds the limit": encode(event().with_changes(data={"blob": "x" * (2 * LIMIT)})),
    }
    raw = await nats.connect(bus.url)
    try:
        js = raw.jetstream()
        for body in garbage.values():
            await js.publish(topic, body)
    finally:
        await raw.close()
    valid = event(7)
    await bus.publish(topic, valid)

    await eventually(lambda: valid.id in handler.ids, "the valid event handled")

    def mine() -> list[Envelope]:
        return [s.envelope for s in dead.calls if s.envelope.extensions["dltopic"] == topic]

    await eventually(lambda: len(mine()) == len(garbage), "a dead letter per message")
    await asyncio.sleep(0.3)  # and nothing more
    assert handler.ids == [valid.id]
    letters = mine()
    assert len(letters) == len(garbage)
    for (reason, body), letter in zip(garbage.items(), letters, strict=True):
        assert letter.type == topics.EventTypes.DEAD_LETTER
        assert reason in letter.extensions["dlreason"]
        assert letter.extensions["dlgroup"] == "readers"
        assert letter.extensions["dlsize"] == len(body)
        assert body.startswith(letter.data)
        assert len(encode(letter)) <= LIMIT
        truncated = len(letter.data) < len(body)
        assert letter.extensions.get("dltruncated", False) == truncated
        assert truncated == (reason == "exceeds the limit")
