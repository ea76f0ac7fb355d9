"""Conversions between `Envelope` and the gateway's wire messages (shared by client and gateway).

`CloudEvent` (``common.proto``) carries an event across gRPC with its whole envelope: every
Virtufin extension travels in ``extensions`` as a string, JSON data as ``text_data``, binary
data as ``binary_data``. ``Gateway.Subscribe`` streams `TopicEventRequest`s (Dapr's shape:
attributes as fields, data as bytes), which `envelope_from_topic_event` turns back into an
`Envelope`.

Example:
    >>> ev = Envelope.new(type="com.virtufin.demo", source="urn:demo", data={"a": 1})
    >>> envelope_from_proto(envelope_to_proto(ev)) == ev
    True
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from virtufin.envelope import EXTENSION_NAMES, Envelope, format_time, from_dict
from virtufin.errors import EnvelopeError
from virtufin.proto import ensure_built

ensure_built()
from virtufin.proto.gen import common_pb2, gateway_pb2  # noqa: E402

__all__ = [
    "envelope_from_proto",
    "envelope_from_topic_event",
    "envelope_to_proto",
    "extensions_of",
    "is_json_content",
    "payload_bytes",
]


def is_json_content(content_type: str | None) -> bool:
    """Whether `content_type` is JSON (absent counts as JSON, the CloudEvents default)."""
    if not content_type:
        return True
    base = content_type.split(";")[0].strip().lower()
    return base in ("application/json", "text/json") or base.endswith("+json")


def extensions_of(envelope: Envelope) -> dict[str, str]:
    """Every extension attribute of `envelope` as strings (typed ones and free ones)."""
    out: dict[str, str] = {}
    for name in EXTENSION_NAMES:
        value = getattr(envelope, name)
        if value is not None:
            out[name] = value if isinstance(value, str) else format_time(value)
    for name, value in envelope.extensions.items():
        out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def payload_bytes(envelope: Envelope) -> bytes:
    """The event's data as bytes: raw for binary data, JSON text otherwise (b"" for none)."""
    data = envelope.data
    if data is None:
        return b""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    if isinstance(data, str) and not is_json_content(envelope.datacontenttype):
        return data.encode("utf-8")
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def envelope_to_proto(envelope: Envelope) -> common_pb2.CloudEvent:
    """The `CloudEvent` message of `envelope`."""
    msg = common_pb2.CloudEvent(
        id=envelope.id,
        source=envelope.source,
        spec_version=envelope.specversion,
        type=envelope.type,
        data_content_type=envelope.datacontenttype or "",
        data_schema=envelope.dataschema or "",
        subject=envelope.subject or "",
        time=format_time(envelope.time) if envelope.time is not None else "",
        extensions=extensions_of(envelope),
    )
    data = envelope.data
    if isinstance(data, bytes | bytearray | memoryview):
        msg.binary_data = bytes(data)
    elif data is not None:
        msg.text_data = payload_bytes(envelope).decode("utf-8")
    return msg


def _context(
    *,
    specversion: str,
    id: str,
    source: str,
    type: str,
    time: str,
    subject: str,
    datacontenttype: str,
    dataschema: str,
    extensions: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "specversion": specversion or "1.0",
        "id": id or str(uuid.uuid4()),
        "source": source,
        "type": type,
    }
    for name, value in (
        ("time", time),
        ("subject", subject),
        ("datacontenttype", datacontenttype),
        ("dataschema", dataschema),
    ):
        if value:
            obj[name] = value
    for name, value in extensions.items():
        if name in obj:
            raise EnvelopeError(name, "is a context attribute, not an extension")
        obj[name] = value
    return obj


def _text_data(obj: dict[str, Any], text: str, content_type: str, field: str) -> None:
    if is_json_content(content_type):
        try:
            obj["data"] = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EnvelopeError(field, f"is not JSON ({exc.msg})") from None
    else:
        obj["data"] = text


def envelope_from_proto(msg: common_pb2.CloudEvent) -> Envelope:
    """Validate a `CloudEvent` message into an `Envelope`; a missing id gets a fresh UUID.

    Raises:
        EnvelopeError: naming the attribute that is wrong.
    """
    obj = _context(
        specversion=msg.spec_version,
        id=msg.id,
        source=msg.source,
        type=msg.type,
        time=msg.time,
        subject=msg.subject,
        datacontenttype=msg.data_content_type,
        dataschema=msg.data_schema,
        extensions=msg.extensions,
    )
    which = msg.WhichOneof("data")
    if which == "text_data":
        _text_data(obj, msg.text_data, msg.data_content_type, "text_data")
    envelope = from_dict(obj)
    if which == "binary_data":  # kept as bytes, not round-tripped through base64
        envelope = envelope.with_changes(data=bytes(msg.binary_data))
    return envelope


def envelope_from_topic_event(msg: gateway_pb2.TopicEventRequest) -> Envelope:
    """The `Envelope` of one ``Gateway.Subscribe`` message.

    Raises:
        EnvelopeError: the event is not a valid envelope.
    """
    obj = _context(
        specversion=msg.spec_version,
        id=msg.id,
        source=msg.source,
        type=msg.type,
        time=msg.time,
        subject=msg.subject,
        datacontenttype=msg.data_content_type,
        dataschema="",
        extensions=msg.extensions,
    )
    content_type = msg.data_content_type
    binary = False
    if msg.data:
        base = content_type.split(";")[0].strip().lower()
        if is_json_content(content_type) or base.startswith("text/"):
            _text_data(obj, msg.data.decode("utf-8", "replace"), content_type, "data")
        else:
            binary = True
    envelope = from_dict(obj)
    return envelope.with_changes(data=bytes(msg.data)) if binary else envelope
