"""The CloudEvents 1.0 envelope every Virtufin event travels in.

Within one process an event is a frozen `Envelope` (no serialisation on the hot path); on the
wire it is structured JSON (``application/cloudevents+json``). Virtufin's extensions use
CloudEvents-legal names (lower-case alphanumerics): the published ``market.lane`` becomes
``marketlane`` and so on (docs/spec/envelope.md has the table).

Example:
    >>> ev = Envelope.new(type="com.virtufin.trading.order.submitted",
    ...                   source="urn:com.virtufin.workmanager", data={"qty": 1})
    >>> decode(encode(ev)) == ev
    True
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

from virtufin.errors import EnvelopeError

__all__ = [
    "CONTENT_TYPE_STRUCTURED",
    "EXTENSION_NAMES",
    "MAX_ENVELOPE_BYTES",
    "PUBLISHED_EXTENSION_NAMES",
    "SPECVERSION",
    "ClockType",
    "Envelope",
    "EnvelopeDraft",
    "decode",
    "encode",
    "format_time",
    "from_cloudevent",
    "from_dict",
    "from_http",
    "parse_time",
    "seal",
    "to_cloudevent",
    "to_dict",
    "to_http",
    "uuid5_text",
]

SPECVERSION: Final = "1.0"
CONTENT_TYPE_STRUCTURED: Final = "application/cloudevents+json"
MAX_ENVELOPE_BYTES: Final = 1024 * 1024
"""Default size limit of one encoded event (1 MiB, NATS' default max payload)."""

ClockType = Literal["wall", "historical"]

_REQUIRED: Final = ("id", "source", "type", "specversion")
_OPTIONAL_CONTEXT: Final = ("datacontenttype", "dataschema", "subject", "time")
# Used with `fullmatch`: `$` would also accept a trailing newline ("LIVE\n").
_NAME_RE: Final = re.compile(r"[a-z0-9]{1,20}")
_ID_RE: Final = re.compile(r"[A-Z0-9_]{1,32}")
_RFC3339_RE: Final = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
#: The form `format_time` writes: UTC, ``Z``, no or six fraction digits.
_CANONICAL_TIME_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{6})?Z")

#: Virtufin's extensions as carried here, and the names the published material uses.
PUBLISHED_EXTENSION_NAMES: Final[Mapping[str, str]] = {
    "correlationid": "correlationid",
    "scenarioid": "scenarioid",
    "runid": "runid",
    "clocktype": "clocktype",
    "eventtime": "eventtime",
    "walltime": "walltime",
    "marketlane": "market.lane",
    "marketselector": "market.selector",
    "portfoliolane": "portfolio.lane",
    "strategylane": "strategy.lane",
    "traceparent": "traceparent",
}
EXTENSION_NAMES: Final = tuple(PUBLISHED_EXTENSION_NAMES)
_TIME_EXTENSIONS: Final = ("eventtime", "walltime")
_LANE_EXTENSIONS: Final = ("marketlane", "portfoliolane", "strategylane")


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``; microseconds only when present."""
    zone = value.tzinfo
    if zone is None:
        raise EnvelopeError("time", "datetime must be timezone-aware")
    if zone is not UTC:
        value = value.astimezone(UTC)
    if type(value) is datetime:
        # isoformat (C, a third of strftime's cost on this hot path) ends in "+00:00" here.
        return value.isoformat()[:-6] + "Z"
    text = value.strftime("%Y-%m-%dT%H:%M:%S")  # subclasses (pandas' Timestamp: nanoseconds)
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


def parse_time(text: str, *, field_name: str = "time") -> datetime:
    """Parse an RFC 3339 timestamp (nanoseconds are truncated to microseconds)."""
    if isinstance(text, str) and _CANONICAL_TIME_RE.fullmatch(text):
        # What `format_time` writes (nearly every time on the wire): read directly, a fifth of
        # the general path's cost (every event decoded carries one to three of them).
        try:
            return datetime.fromisoformat(text)
        except ValueError as exc:
            raise EnvelopeError(field_name, f"{text!r} is not a valid date/time ({exc})") from None
    if not isinstance(text, str) or not _RFC3339_RE.match(text):
        raise EnvelopeError(field_name, f"{text!r} is not an RFC 3339 timestamp")
    norm = text.replace("z", "Z").replace("t", "T")
    if "." in norm:
        head, _, rest = norm.partition(".")
        digits = re.match(r"\d+", rest)
        assert digits is not None
        frac = digits.group(0)
        norm = f"{head}.{frac[:6].ljust(6, '0')}{rest[len(frac) :]}"
    try:
        return datetime.fromisoformat(norm.replace("Z", "+00:00"))
    except ValueError as exc:
        raise EnvelopeError(field_name, f"{text!r} is not a valid date/time ({exc})") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One CloudEvent with Virtufin's extensions as typed fields.

    `data` is the JSON payload (any JSON value) or `bytes` for binary payloads; treat it as
    immutable once the envelope is created. Unknown extensions live in `extensions`.
    """

    id: str
    source: str
    type: str
    data: Any = None
    time: datetime | None = None
    subject: str | None = None
    datacontenttype: str | None = "application/json"
    dataschema: str | None = None
    correlationid: str | None = None
    scenarioid: str | None = None
    runid: str | None = None
    clocktype: ClockType | None = None
    eventtime: datetime | None = None
    walltime: datetime | None = None
    marketlane: str | None = None
    marketselector: str | None = None
    portfoliolane: str | None = None
    strategylane: str | None = None
    traceparent: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)
    specversion: str = SPECVERSION

    @classmethod
    def new(
        cls,
        *,
        type: str,
        source: str,
        data: Any = None,
        time: datetime | None = None,
        **attributes: Any,
    ) -> Envelope:
        """A fresh event: random UUID id, `time` defaulting to now (UTC)."""
        return cls(
            id=str(uuid.uuid4()),
            type=type,
            source=source,
            data=data,
            time=time if time is not None else datetime.now(UTC),
            **attributes,
        )

    def with_changes(self, **changes: Any) -> Envelope:
        """A copy with some attributes changed (envelopes themselves never change)."""
        return replace(self, **changes)

    def validate(self) -> Envelope:
        """Check the attribute rules; return `self` so calls chain.

        Raises:
            EnvelopeError: naming the first attribute that is wrong.
        """
        for name in ("id", "source", "type"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise EnvelopeError(name, "is required and must be a non-empty string")
        if self.specversion != SPECVERSION:
            raise EnvelopeError("specversion", f"must be '1.0' (this is {self.specversion!r})")
        if self.clocktype is not None and self.clocktype not in ("wall", "historical"):
            raise EnvelopeError("clocktype", f"must be wall or historical ({self.clocktype!r})")
        for name in _LANE_EXTENSIONS:
            lane = getattr(self, name)
            if lane is not None and lane not in ("act", "hyp"):
                raise EnvelopeError(name, f"must be act or hyp ({lane!r})")
        if self.marketlane == "act" and self.marketselector is not None:
            raise EnvelopeError("marketselector", "act market lanes carry no selector")
        if self.marketlane == "hyp" and self.marketselector is None:
            raise EnvelopeError("marketselector", "hyp market lanes need a selector")
        for name in ("scenarioid", "marketselector"):
            value = getattr(self, name)
            if value is not None and not _ID_RE.fullmatch(value):
                raise EnvelopeError(name, f"{value!r} must match ^[A-Z0-9_]{{1,32}}$")
        for name in self.extensions:
            if not _NAME_RE.fullmatch(name):
                raise EnvelopeError(name, "extension names are 1-20 lower-case letters/digits")
            if name in EXTENSION_NAMES or name in _REQUIRED or name in _OPTIONAL_CONTEXT:
                raise EnvelopeError(name, "is a typed attribute, not a free extension")
        return self


class EnvelopeDraft:
    """`Envelope`'s slot layout without its frozen guard, for hot paths that build many
    envelopes: set every field (an unset one would raise when read), then `seal` it. Plain
    slot stores cost a fifth of the constructor's frozen setattr per field."""

    __slots__ = Envelope.__slots__

    # The same fields as `Envelope` (annotations only: the slots above hold them).
    id: str
    source: str
    type: str
    data: Any
    time: datetime | None
    subject: str | None
    datacontenttype: str | None
    dataschema: str | None
    correlationid: str | None
    scenarioid: str | None
    runid: str | None
    clocktype: ClockType | None
    eventtime: datetime | None
    walltime: datetime | None
    marketlane: str | None
    marketselector: str | None
    portfoliolane: str | None
    strategylane: str | None
    traceparent: str | None
    extensions: Mapping[str, Any]
    specversion: str


def uuid5_text(namespace: bytes, name: str) -> str:
    """``str(uuid.uuid5(uuid.UUID(bytes=namespace), name))`` without building `uuid.UUID`
    objects (5x cheaper): deterministic event ids on hot paths."""
    raw = bytearray(hashlib.sha1(namespace + name.encode()).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def seal(draft: EnvelopeDraft) -> Envelope:
    """Turn a fully set `EnvelopeDraft` into an ordinary frozen `Envelope` (same object;
    CPython allows ``__class__`` assignment between classes of identical layout)."""
    draft.__class__ = Envelope  # type: ignore[assignment]
    return draft  # type: ignore[return-value]


_TYPED_FIELDS: Final = frozenset(f.name for f in fields(Envelope)) - {"extensions", "data"}
_STRING: Final = "string"
_TIME: Final = "time"
_DATA: Final = "data"
#: How `from_dict` reads each attribute: a string, a time, the data; absent: an extension.
_DECODED: Final[Mapping[str, str]] = {
    **dict.fromkeys(_TYPED_FIELDS, _STRING),
    **dict.fromkeys(("time", *_TIME_EXTENSIONS), _TIME),
    "data": _DATA,
    "data_base64": _DATA,
}


def to_dict(envelope: Envelope) -> dict[str, Any]:
    """The structured-mode JSON object of `envelope` (binary data as ``data_base64``)."""
    out: dict[str, Any] = {
        "specversion": envelope.specversion,
        "id": envelope.id,
        "source": envelope.source,
        "type": envelope.type,
    }
    if envelope.time is not None:
        out["time"] = format_time(envelope.time)
    for name in ("subject", "datacontenttype", "dataschema"):
        value = getattr(envelope, name)
        if value is not None:
            out[name] = value
    for name in EXTENSION_NAMES:
        value = getattr(envelope, name)
        if value is not None:
            out[name] = format_time(value) if name in _TIME_EXTENSIONS else value
    for name, value in envelope.extensions.items():
        out[name] = value
    data = envelope.data
    if isinstance(data, bytes | bytearray | memoryview):
        out["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
    elif data is not None:
        out["data"] = data
    return out


#: `json.dumps(obj, separators=(",", ":"), ensure_ascii=False)` without building an encoder
#: per call.
_JSON: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(envelope: Envelope, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> bytes:
    """Structured JSON bytes of `envelope`.

    Raises:
        EnvelopeError: the encoded event is larger than `max_bytes`, or data is not JSON.
    """
    try:
        body = _JSON.encode(to_dict(envelope))
    except (TypeError, ValueError) as exc:
        raise EnvelopeError("data", f"is not JSON-serialisable ({exc})") from None
    raw = body.encode("utf-8")
    if len(raw) > max_bytes:
        raise EnvelopeError("", f"encoded size {len(raw)} B exceeds the limit of {max_bytes} B")
    return raw


def from_dict(obj: Mapping[str, Any]) -> Envelope:
    """Build and validate an `Envelope` from a structured-mode JSON object.

    Raises:
        EnvelopeError: a required attribute is missing, a value has the wrong type or format.
    """
    if not isinstance(obj, Mapping):
        raise EnvelopeError("", f"expected a JSON object ({type(obj).__name__} given)")
    for name in _REQUIRED:
        if name not in obj:
            raise EnvelopeError(name, "required attribute is missing")
    if obj["specversion"] != SPECVERSION:
        raise EnvelopeError("specversion", f"must be '1.0' (this is {obj['specversion']!r})")
    kwargs: dict[str, Any] = {}
    extensions: dict[str, Any] = {}
    for name, value in obj.items():
        kind = _DECODED.get(name)
        if kind is _STRING:
            if value is not None and not isinstance(value, str):
                raise EnvelopeError(name, f"must be a string ({type(value).__name__} given)")
            kwargs[name] = value
        elif kind is _TIME:
            if value is not None:
                kwargs[name] = parse_time(value, field_name=name)
        elif kind is None:
            if not isinstance(value, str | int | bool) or value is None:
                raise EnvelopeError(name, "extension values are strings, integers or booleans")
            extensions[name] = value
    if "data_base64" in obj:
        if "data" in obj:
            raise EnvelopeError("data", "data and data_base64 are mutually exclusive")
        try:
            kwargs["data"] = base64.b64decode(obj["data_base64"], validate=True)
        except (ValueError, TypeError) as exc:
            raise EnvelopeError("data_base64", f"is not valid base64 ({exc})") from None
    else:
        kwargs["data"] = obj.get("data")
    # Every slot set directly (a draft, sealed): the frozen constructor's per-field setattr
    # would cost more than the rest of decoding. An absent attribute is None here, also
    # ``datacontenttype`` (absent on the wire means unspecified, not JSON).
    draft = object.__new__(EnvelopeDraft)
    get = kwargs.get
    draft.id = kwargs["id"]
    draft.source = kwargs["source"]
    draft.type = kwargs["type"]
    draft.specversion = kwargs["specversion"]
    draft.data = kwargs["data"]
    draft.time = get("time")
    draft.subject = get("subject")
    draft.datacontenttype = get("datacontenttype")
    draft.dataschema = get("dataschema")
    draft.correlationid = get("correlationid")
    draft.scenarioid = get("scenarioid")
    draft.runid = get("runid")
    draft.clocktype = get("clocktype")
    draft.eventtime = get("eventtime")
    draft.walltime = get("walltime")
    draft.marketlane = get("marketlane")
    draft.marketselector = get("marketselector")
    draft.portfoliolane = get("portfoliolane")
    draft.strategylane = get("strategylane")
    draft.traceparent = get("traceparent")
    draft.extensions = extensions
    return seal(draft).validate()


def decode(raw: bytes | str, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> Envelope:
    """Parse structured JSON bytes into a validated `Envelope`.

    Raises:
        EnvelopeError: oversized, not UTF-8, not JSON, or an invalid event.
    """
    if isinstance(raw, str):
        text, size = raw, len(raw.encode("utf-8"))
    else:
        size = len(raw)
        if size > max_bytes:
            raise EnvelopeError("", f"event of {size} B exceeds the limit of {max_bytes} B")
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise EnvelopeError("", "is not UTF-8 text") from None
    if size > max_bytes:
        raise EnvelopeError("", f"event of {size} B exceeds the limit of {max_bytes} B")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EnvelopeError("", f"is not JSON ({exc.msg} at position {exc.pos})") from None
    return from_dict(obj)


# --------------------------------------------------------------------------- cloudevents SDK


def to_cloudevent(envelope: Envelope) -> Any:
    """The `cloudevents.http.CloudEvent` of `envelope` (the SDK's own object)."""
    from cloudevents.http import CloudEvent

    attrs = to_dict(envelope)
    attrs.pop("data", None)
    attrs.pop("data_base64", None)
    return CloudEvent(attrs, envelope.data)


def from_cloudevent(event: Any) -> Envelope:
    """An `Envelope` from a `cloudevents` SDK event (http or conversion API)."""
    attrs: dict[str, Any] = dict(event.get_attributes())
    for name in ("time", *_TIME_EXTENSIONS):
        value = attrs.get(name)
        if isinstance(value, datetime):
            attrs[name] = format_time(value)
    data = event.get_data()
    if isinstance(data, bytes | bytearray):
        attrs["data_base64"] = base64.b64encode(bytes(data)).decode("ascii")
    elif data is not None:
        attrs["data"] = data
    return from_dict(attrs)


def to_http(
    envelope: Envelope, *, mode: Literal["structured", "binary"] = "structured"
) -> tuple[dict[str, str], bytes]:
    """HTTP headers and body in CloudEvents structured or binary content mode."""
    from cloudevents.conversion import to_binary, to_structured

    converter = to_structured if mode == "structured" else to_binary
    headers, body = converter(to_cloudevent(envelope))
    return {str(k): str(v) for k, v in headers.items()}, body or b""


def from_http(headers: Mapping[str, str], body: bytes) -> Envelope:
    """Decode an HTTP request in either content mode.

    Binary mode carries attributes as ``ce-`` headers, so integer and boolean extensions come
    back as strings there (a limit of the mode, not of this codec).

    Raises:
        EnvelopeError: the SDK cannot read it or the result is not a valid envelope.
    """
    from cloudevents.exceptions import GenericException
    from cloudevents.http import from_http as sdk_from_http

    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if content_type.split(";")[0].strip() == CONTENT_TYPE_STRUCTURED:
        # Our own decoder: the SDK json-parses decoded data_base64, turning b"0" into 0.
        return decode(body)
    try:
        event = sdk_from_http(dict(headers), body)
    except GenericException as exc:
        raise EnvelopeError("", f"not a CloudEvent over HTTP ({exc})") from None
    envelope = from_cloudevent(event)
    media = (envelope.datacontenttype or "application/json").split(";")[0].strip()
    if body and not (media == "application/json" or media.endswith("+json")):
        # The SDK json-parses any body that looks like JSON; a non-JSON type keeps its bytes.
        envelope = envelope.with_changes(data=bytes(body))
    elif body:
        # A JSON body is the data's JSON text; the SDK reads ``""`` (an empty string) as no
        # data, so the body is parsed here.
        try:
            envelope = envelope.with_changes(data=json.loads(body))
        except ValueError as exc:
            raise EnvelopeError("data", f"the {media} body is not JSON ({exc})") from None
    return envelope
