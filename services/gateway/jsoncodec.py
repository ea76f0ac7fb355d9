"""JSON ↔ protobuf for ``InvokeJson``, planned once per message type, equal to ``json_format``.

``json_format`` walks the descriptors in pure Python on every call, which was the largest single
cost of a routed ``InvokeJson`` in the gateway process. `JsonCodec` makes a plan per message
type once (field names, kinds, converters, defaults) and then converts with it:

- **to JSON** (`JsonCodec.dumps`): what ``MessageToJson(preserving_proto_field_name=True,
  always_print_fields_with_no_presence=True, indent=None)`` writes, byte for byte: the set
  fields in field-number order, then every field without presence that was not set, in
  declaration order; 64-bit integers as strings, enums by name, non-finite doubles as
  ``"NaN"``/``"Infinity"``.
- **from JSON** (`JsonCodec.parse`): the plain, valid documents are checked strictly (known
  field names or JSON names, no duplicate keys or oneof members, no nulls, exact JSON types and
  integer ranges, well-formed strings) and built with the message constructor; every other
  document goes through ``json_format.Parse``, so what it accepts, rejects and reports stays
  ``json_format``'s.

The plans cover messages of strings, bools, 32- and 64-bit integers, doubles, enums, nested
messages, repeated fields and string-keyed maps. A type with anything else beneath it (bytes,
floats, well-known types, groups, extensions, maps with other keys) goes through
``json_format`` both ways. ``tests/unit/gateway/test_jsoncodec.py`` compares both on random
messages and documents.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["JsonCodec"]

_F: Final = FieldDescriptor
_MAX_DEPTH: Final = 100  # json_format's max_recursion_depth
_RANGES: Final = {
    _F.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    _F.CPPTYPE_UINT32: (0, 2**32 - 1),
    _F.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    _F.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_EXACT_DOUBLE: Final = 2**53


class _Fallback(Exception):
    """The fast path does not take this document or message: ``json_format`` does."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    made = dict(pairs)
    if len(made) != len(pairs):
        raise _Fallback
    return made


def _check_str(value: Any) -> str:
    if type(value) is not str:
        raise _Fallback
    if not value.isascii():
        try:
            value.encode("utf-8")  # lone surrogates ("\ud800") are json_format's errors
        except UnicodeEncodeError:
            raise _Fallback from None
    return value


def _check_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _Fallback
    return value


def _check_double(value: Any) -> float:
    kind = type(value)
    if kind is float and math.isfinite(value):
        return float(value)
    if kind is int and -_EXACT_DOUBLE <= value <= _EXACT_DOUBLE:
        return float(value)
    raise _Fallback


def _int_checker(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if type(value) is not int or not low <= value <= high:
            raise _Fallback
        return int(value)

    return check


def _double_out(value: float) -> Any:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _identity(value: Any) -> Any:
    return value


def _is_map(field: Any) -> bool:
    return field.message_type is not None and bool(field.message_type.GetOptions().map_entry)


def _locally_plannable(descriptor: Any) -> bool:
    """No well-known type, extension, bytes, float, group, NullValue or non-string map key."""
    if descriptor.full_name.startswith("google.protobuf.") or descriptor.extension_ranges:
        return False
    for field in descriptor.fields:
        cpp = field.cpp_type
        if cpp == _F.CPPTYPE_FLOAT or field.type in (_F.TYPE_BYTES, _F.TYPE_GROUP):
            return False
        if cpp == _F.CPPTYPE_ENUM and field.enum_type.full_name.startswith("google.protobuf."):
            return False
        if _is_map(field) and field.message_type.fields_by_name["key"].cpp_type != (
            _F.CPPTYPE_STRING
        ):
            return False
    return True


class _Field:
    """One field's name, converters and default, as the plan of its message uses them."""

    __slots__ = ("default", "inp", "json_name", "name", "oneof", "out")

    def __init__(self, field: Any) -> None:
        self.name = field.name
        self.json_name = field.json_name
        oneof = field.containing_oneof
        self.oneof = None if oneof is None else oneof.name
        self.inp: Callable[[Any, int], Any] = _unsupported_in
        self.out: Callable[[Any], Any] = _unsupported_out
        self.default: Callable[[], Any] | None = None


def _unsupported_in(value: Any, depth: int) -> Any:
    raise _Fallback


def _unsupported_out(value: Any) -> Any:
    raise _Fallback


class _Plan:
    """How to convert one message type (``simple`` False: only through json_format)."""

    __slots__ = ("by_key", "by_number", "defaults", "fields", "has_oneofs", "simple")

    def __init__(self) -> None:
        self.simple = True
        self.fields: list[_Field] = []
        self.by_key: dict[str, _Field] = {}
        self.by_number: dict[int, _Field] = {}
        self.defaults: list[tuple[str, Callable[[], Any]]] = []
        self.has_oneofs = False

    def to_json_object(self, message: Message) -> dict[str, Any]:
        js: dict[str, Any] = {}
        by_number = self.by_number
        for field, value in message.ListFields():
            plan_field = by_number[field.number]
            js[plan_field.name] = plan_field.out(value)
        for name, default in self.defaults:
            if name not in js:
                js[name] = default()
        return js

    def kwargs(self, obj: dict[str, Any], depth: int) -> dict[str, Any]:
        if depth > _MAX_DEPTH:
            raise _Fallback
        out: dict[str, Any] = {}
        oneofs: set[str] | None = set() if self.has_oneofs else None
        by_key = self.by_key
        for key, value in obj.items():
            field = by_key.get(key)
            if field is None or value is None or field.name in out:
                raise _Fallback
            if oneofs is not None and field.oneof is not None:
                if field.oneof in oneofs:
                    raise _Fallback
                oneofs.add(field.oneof)
            out[field.name] = field.inp(value, depth)
        return out


class JsonCodec:
    """JSON text ↔ serialized protobuf for the message classes of one descriptor pool.

    Example:
        >>> codec = JsonCodec()
        >>> raw = codec.parse('{"name": "echo"}', gateway_pb2.GetServiceRequest)
        >>> codec.dumps(gateway_pb2.GetServiceRequest.FromString(raw))
        '{"name": "echo"}'
    """

    def __init__(self) -> None:
        self._plans: dict[str, _Plan] = {}
        self._simplicity: dict[str, bool] = {}

    # ------------------------------------------------------------------ planning

    def _simple(self, descriptor: Any) -> bool:
        """Whether every message type reachable from `descriptor` has only planned kinds."""
        known = self._simplicity.get(descriptor.full_name)
        if known is not None:
            return known
        seen: set[str] = set()
        stack: list[Any] = [descriptor]
        ok = True
        while stack and ok:
            current = stack.pop()
            if current.full_name in seen:
                continue
            seen.add(current.full_name)
            ok = _locally_plannable(current)
            stack.extend(f.message_type for f in current.fields if f.message_type is not None)
        self._simplicity[descriptor.full_name] = ok
        return ok

    def _plan(self, descriptor: Any) -> _Plan:
        plan = self._plans.get(descriptor.full_name)
        if plan is not None:
            return plan
        plan = _Plan()
        self._plans[descriptor.full_name] = plan  # before the fields: types may recurse
        plan.simple = self._simple(descriptor)
        if not plan.simple:
            return plan
        try:
            for field in descriptor.fields:
                made = self._field(field)
                plan.fields.append(made)
                plan.by_number[field.number] = made
                plan.by_key[field.json_name] = made
                plan.by_key[field.name] = made
                if made.oneof is not None:
                    plan.has_oneofs = True
                if not field.has_presence and made.default is not None:
                    plan.defaults.append((made.name, made.default))
        except BaseException:
            del self._plans[descriptor.full_name]  # never keep half a plan
            raise
        return plan

    def _scalar(self, field: Any) -> tuple[Callable[[Any, int], Any], Callable[[Any], Any], Any]:
        """(input converter, output converter, default JSON value) of a singular value."""
        cpp = field.cpp_type
        if cpp == _F.CPPTYPE_STRING:
            return (lambda v, d: _check_str(v)), _identity, ""
        if cpp == _F.CPPTYPE_BOOL:
            return (lambda v, d: _check_bool(v)), _identity, False
        if cpp in (_F.CPPTYPE_INT32, _F.CPPTYPE_UINT32):
            check = _int_checker(*_RANGES[cpp])
            return (lambda v, d: check(v)), _identity, 0
        if cpp in (_F.CPPTYPE_INT64, _F.CPPTYPE_UINT64):
            check64 = _int_checker(*_RANGES[cpp])
            return (lambda v, d: check64(v)), str, "0"
        if cpp == _F.CPPTYPE_DOUBLE:
            return (lambda v, d: _check_double(v)), _double_out, 0.0
        if cpp == _F.CPPTYPE_ENUM:
            return self._enum(field)
        if cpp == _F.CPPTYPE_MESSAGE:
            sub = self._plan(field.message_type)

            def inp(value: Any, depth: int) -> Any:
                if type(value) is not dict:
                    raise _Fallback
                return sub.kwargs(value, depth + 1)

            return inp, sub.to_json_object, None
        raise AssertionError(f"{field.full_name} is not plannable")  # pragma: no cover

    def _enum(self, field: Any) -> tuple[Callable[[Any, int], Any], Callable[[Any], Any], Any]:
        enum = field.enum_type
        by_name: dict[str, int] = {v.name: v.number for v in enum.values}
        by_number: dict[int, str] = {v.number: v.name for v in enum.values}
        closed = enum.is_closed
        low, high = _RANGES[_F.CPPTYPE_INT32]

        def inp(value: Any, depth: int) -> int:
            kind = type(value)
            if kind is str:
                number = by_name.get(value)
                if number is not None:
                    return number
            elif kind is int and (value in by_number or (not closed and low <= value <= high)):
                return int(value)
            raise _Fallback

        def out(value: int) -> Any:
            name = by_number.get(value)
            if name is not None:
                return name
            if closed:
                raise _Fallback
            return value

        return inp, out, None if field.is_repeated else out(field.default_value)

    def _field(self, field: Any) -> _Field:
        made = _Field(field)
        if _is_map(field):
            value_in, value_out, _ = self._scalar(field.message_type.fields_by_name["value"])

            def map_in(obj: Any, depth: int) -> dict[str, Any]:
                if type(obj) is not dict:
                    raise _Fallback
                return {_check_str(k): value_in(v, depth) for k, v in obj.items()}

            def map_out(mapping: Any) -> dict[str, Any]:
                return {str(k): value_out(mapping[k]) for k in mapping}

            made.inp, made.out, made.default = map_in, map_out, dict
            return made
        one_in, one_out, default = self._scalar(field)
        if field.is_repeated:

            def list_in(items: Any, depth: int) -> list[Any]:
                if type(items) is not list:
                    raise _Fallback
                return [one_in(item, depth) for item in items]

            def list_out(items: Any) -> list[Any]:
                return [one_out(item) for item in items]

            made.inp, made.out, made.default = list_in, list_out, list
            return made
        made.inp, made.out = one_in, one_out
        made.default = None if field.has_presence else (lambda: default)
        return made

    # ------------------------------------------------------------------ converting

    def parse(self, text: str, message_class: type[Message]) -> bytes:
        """The serialized message `text` describes (``json_format.Parse`` semantics).

        Raises:
            json_format.ParseError: `text` does not fit the message type.
        """
        plan = self._plan(message_class.DESCRIPTOR)
        if plan.simple:
            try:
                obj = json.loads(text, object_pairs_hook=_no_duplicates)
                if type(obj) is dict:
                    return bytes(message_class(**plan.kwargs(obj, 1)).SerializeToString())
            except (_Fallback, ValueError, TypeError, RecursionError):
                pass
        message = message_class()
        json_format.Parse(text, message)
        return bytes(message.SerializeToString())

    def dumps(self, message: Message) -> str:
        """``MessageToJson(message, preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True, indent=None)``."""
        plan = self._plan(message.DESCRIPTOR)
        if plan.simple:
            try:
                return json.dumps(plan.to_json_object(message))
            except _Fallback:
                pass
        return str(
            json_format.MessageToJson(
                message,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
                indent=None,
            )
        )
