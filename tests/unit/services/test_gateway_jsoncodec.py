"""The gateway's planned JSON codec says exactly what ``json_format`` says, both ways, on every
message type of our protos (and on types it leaves to ``json_format``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.jsoncodec import JsonCodec
from virtufin.proto import ensure_built

ensure_built()
from virtufin.proto.gen import (  # noqa: E402
    common_pb2,
    execution_pb2,
    gateway_pb2,
    marketdata_pb2,
    worker_pb2,
    workmanager_pb2,
)

F = FieldDescriptor


def _message_classes() -> list[type[Message]]:
    classes: list[type[Message]] = []

    def visit(container: Any, descriptors: Any) -> None:
        for name, descriptor in descriptors.items():
            if descriptor.GetOptions().map_entry:
                continue
            cls = getattr(container, name)
            classes.append(cls)
            visit(cls, descriptor.nested_types_by_name)

    for module in (common_pb2, execution_pb2, gateway_pb2, marketdata_pb2, worker_pb2):
        visit(module, module.DESCRIPTOR.message_types_by_name)
    visit(workmanager_pb2, workmanager_pb2.DESCRIPTOR.message_types_by_name)
    return classes


CLASSES = _message_classes()
IDS = [cls.DESCRIPTOR.full_name for cls in CLASSES]
CODEC = JsonCodec()
TEXT = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(["é", "\U0001f600"]))


def _reference_json(message: Message) -> str:
    return str(
        json_format.MessageToJson(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            indent=None,
        )
    )


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    cpp = field.cpp_type
    if cpp == F.CPPTYPE_STRING:
        return st.binary(max_size=8) if field.type == F.TYPE_BYTES else TEXT
    if cpp == F.CPPTYPE_BOOL:
        return st.booleans()
    if cpp == F.CPPTYPE_INT32:
        return st.integers(-(2**31), 2**31 - 1)
    if cpp == F.CPPTYPE_UINT32:
        return st.integers(0, 2**32 - 1)
    if cpp == F.CPPTYPE_INT64:
        return st.integers(-(2**63), 2**63 - 1)
    if cpp == F.CPPTYPE_UINT64:
        return st.integers(0, 2**64 - 1)
    if cpp in (F.CPPTYPE_DOUBLE, F.CPPTYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=64 if cpp == 5 else 32)
    if cpp == F.CPPTYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    raise AssertionError(field.full_name)


def _fill(draw: Any, message: Message, depth: int) -> None:
    for field in message.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        is_message = field.cpp_type == F.CPPTYPE_MESSAGE
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            target = getattr(message, field.name)
            for key in draw(st.lists(_scalar(key_field), max_size=3)):
                if value_field.cpp_type == F.CPPTYPE_MESSAGE:
                    if depth < 3:
                        _fill(draw, target[key], depth + 1)
                else:
                    target[key] = draw(_scalar(value_field))
        elif field.is_repeated:
            target = getattr(message, field.name)
            for _ in range(draw(st.integers(0, 2))):
                if is_message:
                    if depth < 3:
                        _fill(draw, target.add(), depth + 1)
                else:
                    target.append(draw(_scalar(field)))
        elif is_message:
            if depth < 3:
                sub = getattr(message, field.name)
                sub.SetInParent()
                _fill(draw, sub, depth + 1)
        else:
            setattr(message, field.name, draw(_scalar(field)))


@st.composite
def messages(draw: Any) -> Message:
    cls = draw(st.sampled_from(CLASSES))
    message = cls()
    _fill(draw, message, 0)
    return message


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats(allow_nan=False)
    | TEXT
    | st.sampled_from(["NaN", "Infinity", "12", "1.5", "\ud800", "WORKER_STATUS_RUNNING"])
)


def _value_for(field: FieldDescriptor, draw: Any, depth: int) -> Any:
    if draw(st.integers(0, 5)) == 0:  # anything at all, now and then
        return draw(JSON_SCALARS)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        keys = draw(st.lists(TEXT, max_size=2))
        return {k: _single(value_field, draw, depth) for k in keys}
    if field.is_repeated:
        return [_single(field, draw, depth) for _ in range(draw(st.integers(0, 2)))]
    return _single(field, draw, depth)


def _single(field: FieldDescriptor, draw: Any, depth: int) -> Any:
    cpp = field.cpp_type
    if cpp == F.CPPTYPE_MESSAGE:
        return _document(field.message_type, draw, depth + 1) if depth < 3 else {}
    if cpp == F.CPPTYPE_ENUM:
        names = [v.name for v in field.enum_type.values]
        return draw(st.sampled_from(names) | st.integers(-3, 40) | st.just("NOPE"))
    if cpp == F.CPPTYPE_STRING:
        if field.type == F.TYPE_BYTES:
            return draw(st.sampled_from(["", "AAEC", "a-_b", "!!"]))
        return draw(TEXT)
    return draw(_scalar(field) | JSON_SCALARS)


def _document(descriptor: Descriptor, draw: Any, depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for field in descriptor.fields:
        if draw(st.integers(0, 2)) == 0:
            key = field.json_name if draw(st.booleans()) else field.name
            doc[key] = _value_for(field, draw, depth)
    if draw(st.integers(0, 9)) == 0:
        doc["no_such_field"] = 1
    return doc


@st.composite
def documents(draw: Any) -> tuple[type[Message], str]:
    cls = draw(st.sampled_from(CLASSES))
    doc = _document(cls.DESCRIPTOR, draw, 0)
    text = json.dumps(doc)
    if doc and draw(st.integers(0, 9)) == 0:  # a duplicate key
        first = next(iter(doc))
        text = text[:-1] + f", {json.dumps(first)}: {json.dumps(doc[first])}}}"
    return cls, text


def _reference_parse(cls: type[Message], text: str) -> Message | type[Exception]:
    message = cls()
    try:
        json_format.Parse(text, message)
    except Exception as exc:
        return type(exc)
    return message


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(messages())
def test_dumps_writes_what_json_format_writes(message: Message) -> None:
    outcomes: list[str | type[Exception]] = []
    for dumps in (CODEC.dumps, _reference_json):
        try:
            outcomes.append(dumps(message))
        except Exception as exc:  # e.g. a Timestamp out of range, in both
            outcomes.append(type(exc))
    assert outcomes[0] == outcomes[1]


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(documents())
def test_parse_accepts_and_refuses_what_json_format_does(case: tuple[type[Message], str]) -> None:
    cls, text = case
    expected = _reference_parse(cls, text)
    try:
        got: Message | type[Exception] = cls.FromString(CODEC.parse(text, cls))
    except Exception as exc:
        got = type(exc)
    assert got == expected


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_every_type_round_trips_its_defaults(cls: type[Message]) -> None:
    message = cls()
    assert CODEC.dumps(message) == _reference_json(message)
    assert cls.FromString(CODEC.parse("{}", cls)) == message


def test_well_known_types_go_through_json_format() -> None:
    value = struct_pb2.Struct()
    value.update({"a": [1, "x", None]})
    assert CODEC.dumps(value) == _reference_json(value)
    stamp = timestamp_pb2.Timestamp(seconds=5)
    assert CODEC.dumps(stamp) == '"1970-01-01T00:00:05Z"'
    raw = CODEC.parse('"1970-01-01T00:00:07Z"', timestamp_pb2.Timestamp)
    assert timestamp_pb2.Timestamp.FromString(raw).seconds == 7


def test_plain_documents_take_the_planned_path() -> None:
    codec = JsonCodec()
    raw = codec.parse('{"name": "bench"}', gateway_pb2.GetServiceRequest)
    assert gateway_pb2.GetServiceRequest.FromString(raw).name == "bench"
    assert codec._plans["virtufin.GetServiceRequest"].simple
    with pytest.raises(json_format.ParseError, match="no field named"):
        codec.parse('{"nope": 1}', gateway_pb2.GetServiceRequest)
