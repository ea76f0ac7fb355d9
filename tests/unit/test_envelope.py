"""The CloudEvents envelope: codec identity, SDK interoperability, and every malformed input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from cloudevents.http import from_http as sdk_from_http
from hypothesis import given
from hypothesis import strategies as st

from virtufin.envelope import (
    Envelope,
    decode,
    encode,
    from_cloudevent,
    from_http,
    to_cloudevent,
    to_http,
)
from virtufin.errors import EnvelopeError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
times = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001 - hypothesis takes naive bounds with timezones=
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
ids = st.from_regex(r"\A[A-Z0-9_]{1,32}\Z")
text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30
)


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    market = draw(st.sampled_from([None, "act", "hyp"]))
    data = draw(st.one_of(json_values, st.binary(max_size=40)))
    return Envelope(
        id=draw(text),
        source=draw(text),
        type=draw(text),
        data=data,
        time=draw(st.none() | times),
        subject=draw(st.none() | text),
        datacontenttype="application/octet-stream"
        if isinstance(data, bytes)
        else "application/json",
        correlationid=draw(st.none() | st.uuids().map(str)),
        scenarioid=draw(st.none() | ids),
        runid=draw(st.none() | st.uuids().map(str)),
        clocktype=draw(st.sampled_from([None, "wall", "historical"])),
        eventtime=draw(st.none() | times),
        walltime=draw(st.none() | times),
        marketlane=market,
        marketselector=draw(ids) if market == "hyp" else None,
        portfoliolane=draw(st.sampled_from([None, "act", "hyp"])),
        strategylane=draw(st.sampled_from([None, "act", "hyp"])),
        extensions=draw(
            st.dictionaries(
                st.from_regex(r"\Ax[a-z0-9]{0,10}\Z"),
                st.text(max_size=10) | st.integers(0, 10**6) | st.booleans(),
                max_size=3,
            )
        ),
    )


@given(envelopes())
def test_encode_then_decode_is_the_identity(envelope: Envelope) -> None:
    assert decode(encode(envelope)) == envelope


def _timed(envelope: Envelope) -> Envelope:
    """The SDK stamps `time` on events that have none, and reads empty data (``b""``, and
    ``""`` even in structured mode) as no data; compare events where that cannot happen."""
    if envelope.data in (b"", ""):
        envelope = envelope.with_changes(data=None)
    return envelope if envelope.time is not None else envelope.with_changes(time=datetime.now(UTC))


@given(envelopes().map(_timed))
def test_our_json_is_read_by_the_cloudevents_sdk(envelope: Envelope) -> None:
    if isinstance(envelope.data, bytes):  # the SDK json-parses decoded data_base64
        envelope = envelope.with_changes(data={"raw": envelope.data.hex()})
    sdk_event = sdk_from_http({"content-type": "application/cloudevents+json"}, encode(envelope))
    assert sdk_event["id"] == envelope.id
    assert sdk_event["type"] == envelope.type
    assert sdk_event.get_data() == envelope.data
    assert from_cloudevent(sdk_event) == envelope
    assert from_http(*to_structured(to_cloudevent(envelope))) == envelope


def test_the_sdks_json_is_read_by_ours() -> None:
    sdk_event = CloudEvent(
        {
            "type": "com.virtufin.trading.order.filled",
            "source": "urn:com.virtufin.execution",
            "scenarioid": "LIVE",
            "clocktype": "wall",
            "marketlane": "act",
        },
        {"qty_filled": 1.5},
    )
    _, body = to_structured(sdk_event)
    ours = decode(body)
    assert ours.id == sdk_event["id"]
    assert ours.data == {"qty_filled": 1.5}
    assert ours.scenarioid == "LIVE"
    assert ours.time is not None
    assert from_cloudevent(sdk_event) == ours


@pytest.mark.parametrize("mode", ["structured", "binary"])
@given(envelope=envelopes().map(_timed))
def test_http_modes_round_trip(mode: str, envelope: Envelope) -> None:
    if mode == "binary":  # headers are text: extensions come back as strings in this mode
        envelope = envelope.with_changes(
            extensions={k: str(v) for k, v in envelope.extensions.items() if type(v) is str}
        )
    headers, body = to_http(envelope, mode=mode)  # type: ignore[arg-type]
    assert from_http(headers, body) == envelope


def _base(**changes: object) -> bytes:
    obj: dict[str, object] = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
    obj.update(changes)
    return json.dumps({k: v for k, v in obj.items() if v is not ...}).encode()


BAD_ENVELOPES = [
    (b"not json", "is not JSON"),
    (b"\xff\xfe", "is not UTF-8 text"),
    (b"[1, 2]", "expected a JSON object"),
    (_base(id=...), "id: required attribute is missing"),
    (_base(source=...), "source: required attribute is missing"),
    (_base(type=...), "type: required attribute is missing"),
    (_base(specversion=...), "specversion: required attribute is missing"),
    (_base(specversion="0.3"), "specversion: must be '1.0'"),
    (_base(id=""), "id: is required and must be a non-empty string"),
    (_base(time="yesterday"), "time: 'yesterday' is not an RFC 3339 timestamp"),
    (_base(time="2024-02-30T00:00:00Z"), "time: '2024-02-30T00:00:00Z' is not a valid date"),
    (_base(eventtime="2024-01-01"), "eventtime: '2024-01-01' is not an RFC 3339"),
    (_base(clocktype="sundial"), "clocktype: must be wall or historical"),
    (_base(marketlane="maybe"), "marketlane: must be act or hyp"),
    (_base(marketlane="act", marketselector="EQ"), "act market lanes carry no selector"),
    (_base(marketlane="hyp"), "hyp market lanes need a selector"),
    (_base(scenarioid="lower"), "scenarioid: 'lower' must match"),
    (_base(subject=5), "subject: must be a string"),
    (_base(Bad_Name="x"), "extension names are 1-20 lower-case letters/digits"),
    (_base(**{"name\n": "x"}), "extension names are 1-20 lower-case letters/digits"),
    (_base(scenarioid="LIVE\n"), "scenarioid: 'LIVE\\n' must match"),
    (_base(marketlane="hyp", marketselector="EQ\n"), "marketselector: 'EQ\\n' must match"),
    (_base(nested={"a": 1}), "extension values are strings, integers or booleans"),
    (_base(data=1, data_base64="AA=="), "data and data_base64 are mutually exclusive"),
    (_base(data_base64="!!!"), "data_base64: is not valid base64"),
    (
        b'{"specversion":"1.0","id":"1","source":"s","type":"t","data":"'
        + b"x" * 2_000_000
        + b'"}',
        "exceeds the limit of 1048576 B",
    ),
]


@pytest.mark.parametrize(("raw", "message"), BAD_ENVELOPES)
def test_malformed_envelopes_raise_one_typed_error_saying_what_is_wrong(
    raw: bytes, message: str
) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode(raw)
    assert message in str(info.value)


def test_encoding_enforces_the_size_limit_and_json_data() -> None:
    big = Envelope.new(type="t", source="s", data="x" * 100)
    with pytest.raises(EnvelopeError, match="exceeds the limit of 50 B"):
        encode(big, max_bytes=50)
    with pytest.raises(EnvelopeError, match="data: is not JSON-serialisable"):
        encode(Envelope.new(type="t", source="s", data={"x": object()}))


def test_typed_objects_stay_unserialised_and_immutable_in_process() -> None:
    ev = Envelope.new(type="t", source="s", data={"a": 1}, scenarioid="LIVE")
    with pytest.raises(AttributeError):
        ev.scenarioid = "S1"  # type: ignore[misc]
    moved = ev.with_changes(scenarioid="S1")
    assert (ev.scenarioid, moved.scenarioid, moved.data is ev.data) == ("LIVE", "S1", True)


def test_nanosecond_times_from_other_producers_are_read() -> None:
    ev = decode(_base(time="2024-01-02T03:04:05.123456789+01:00"))
    assert ev.time == datetime(2024, 1, 2, 2, 4, 5, 123456, tzinfo=UTC)


def test_a_sealed_draft_is_an_ordinary_frozen_envelope() -> None:
    from dataclasses import FrozenInstanceError, fields

    from virtufin.envelope import EnvelopeDraft, seal

    expected = Envelope(id="1", source="s", type="t", data={"k": 1}, scenarioid="LIVE")
    draft = object.__new__(EnvelopeDraft)
    for f in fields(Envelope):
        setattr(draft, f.name, getattr(expected, f.name))
    sealed = seal(draft)
    assert type(sealed) is Envelope
    assert sealed == expected
    assert hash(sealed.id) == hash(expected.id)
    assert decode(encode(sealed)) == expected
    with pytest.raises(FrozenInstanceError):
        sealed.id = "2"  # type: ignore[misc]


def test_uuid5_text_equals_the_standard_library() -> None:
    import uuid

    from virtufin.envelope import uuid5_text

    space = uuid.UUID("5f0c6d38-9a53-4d57-9b43-1c1f62c5a6a1")
    for name in ("a", "urn:x|1|0", "ü" * 40, ""):
        assert uuid5_text(space.bytes, name) == str(uuid.uuid5(space, name))
