"""What the gateway streams: `TopicEventRequest`s, and which service an event came from.

Envelope ↔ `CloudEvent` conversions live in `virtufin.client.convert` (the client needs them
too); they are re-exported here for the gateway's modules.
"""

from __future__ import annotations

from typing import Final

from virtufin.client.convert import (
    envelope_from_proto,
    envelope_to_proto,
    extensions_of,
    payload_bytes,
)
from virtufin.envelope import Envelope, format_time
from virtufin.proto import ensure_built

ensure_built()
from virtufin.proto.gen import gateway_pb2  # noqa: E402

__all__ = [
    "envelope_from_proto",
    "envelope_to_proto",
    "service_of_source",
    "topic_event",
]

_SOURCE_PREFIX: Final = "urn:com.virtufin."


def service_of_source(source: str) -> str:
    """``urn:com.virtufin.workmanager`` → ``workmanager`` (the source itself otherwise)."""
    return source[len(_SOURCE_PREFIX) :] if source.startswith(_SOURCE_PREFIX) else source


def topic_event(
    envelope: Envelope, topic: str, *, pubsub_name: str
) -> gateway_pb2.TopicEventRequest:
    """What ``Gateway.Subscribe`` streams for `envelope` received on `topic`."""
    return gateway_pb2.TopicEventRequest(
        id=envelope.id,
        source=envelope.source,
        type=envelope.type,
        spec_version=envelope.specversion,
        data_content_type=envelope.datacontenttype or "",
        topic=topic,
        data=payload_bytes(envelope),
        pubsub_name=pubsub_name,
        extensions=extensions_of(envelope),
        subject=envelope.subject or "",
        time=format_time(envelope.time) if envelope.time is not None else "",
    )
