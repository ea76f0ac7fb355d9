"""JSON Schemas (draft 2020-12) of protobuf messages, as the proto3 JSON mapping reads them.

Field names are the JSON names (lowerCamelCase); the parser also accepts the original names.
64-bit integers are strings or integers, enums are their names, ``bytes`` are base64,
well-known types map to their JSON forms (Timestamp → date-time string, …). Nested messages
are shared through ``$defs``, so recursive messages work.
"""

from __future__ import annotations

from typing import Any, Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor

__all__ = ["message_schema"]

_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
_INT64: Final = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^-?[0-9]+$"}]}
_FLOAT: Final = {"anyOf": [{"type": "number"}, {"enum": ["NaN", "Infinity", "-Infinity"]}]}
_SCALARS: Final[dict[int, dict[str, Any]]] = {
    FieldDescriptor.TYPE_DOUBLE: _FLOAT,
    FieldDescriptor.TYPE_FLOAT: _FLOAT,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_UINT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_FIXED64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_INT32: {"type": "integer"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "minimum": 0},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WELL_KNOWN: Final[dict[str, dict[str, Any]]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.Int32Value": {"type": ["integer", "null"]},
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
}


def _field_schema(field: FieldDescriptor, defs: dict[str, Any]) -> dict[str, Any]:
    msg = field.message_type
    if msg is not None and msg.GetOptions().map_entry:
        value = _value_schema(msg.fields_by_name["value"], defs)
        return {"type": "object", "additionalProperties": value}
    item = _value_schema(field, defs)
    if getattr(field, "is_repeated", False):  # protobuf ≥ 5.27; typeshed lacks it
        return {"type": "array", "items": item}
    return item


def _value_schema(field: FieldDescriptor, defs: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None:
        return _message_ref(field.message_type, defs)
    enum = field.enum_type
    if enum is not None:
        names = [v.name for v in enum.values]
        return {"anyOf": [{"enum": names}, {"type": "integer"}], "title": enum.full_name}
    return dict(_SCALARS.get(field.type, {}))


def _message_ref(msg: Descriptor, defs: dict[str, Any]) -> dict[str, Any]:
    if msg.full_name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[msg.full_name])
    if msg.full_name not in defs:
        defs[msg.full_name] = {}  # placeholder first: recursion terminates
        defs[msg.full_name] = _object_schema(msg, defs)
    return {"$ref": f"#/$defs/{msg.full_name}"}


def _object_schema(msg: Descriptor, defs: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for field in msg.fields:
        schema = _field_schema(field, defs)
        if field.containing_oneof is not None and not field.containing_oneof.name.startswith("_"):
            schema = {**schema, "description": f"oneof {field.containing_oneof.name}"}
        props[field.json_name] = schema
    out: dict[str, Any] = {
        "type": "object",
        "title": msg.full_name,
        "properties": props,
        "additionalProperties": False,
    }
    oneofs = [o for o in msg.oneofs if not o.name.startswith("_")]
    if oneofs:
        out["allOf"] = [
            {
                "not": {
                    "anyOf": [
                        {"required": [a.json_name, b.json_name]}
                        for i, a in enumerate(o.fields)
                        for b in o.fields[i + 1 :]
                    ]
                }
            }
            for o in oneofs
            if len(o.fields) > 1
        ]
        if not out["allOf"]:
            del out["allOf"]
    return out


def message_schema(msg: Descriptor) -> dict[str, Any]:
    """The JSON Schema of message type `msg`.

    Example:
        >>> message_schema(gateway_pb2.GetStateRequest.DESCRIPTOR)["properties"]["key"]
        {'type': 'string'}
    """
    defs: dict[str, Any] = {}
    known = _WELL_KNOWN.get(msg.full_name)
    root = _object_schema(msg, defs) if known is None else dict(known)
    out: dict[str, Any] = {"$schema": _DIALECT, **root}
    if defs:
        out["$defs"] = defs
    return out
