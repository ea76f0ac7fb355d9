"""Worker parameters: a small JSON Schema subset, validated before a worker starts.

Supported keywords: ``type`` (a name or a list), ``properties``, ``required``,
``additionalProperties`` (boolean), ``default``, ``enum``, ``minimum``, ``maximum``,
``exclusiveMinimum``, ``exclusiveMaximum``, ``minLength``, ``maxLength``, ``items``,
``minItems``, ``maxItems``, plus annotations (``title``, ``description``, ``examples``, ``$schema``,
``$comment``). Any other keyword is refused, so that nobody believes it is enforced.

Cross-field rules use the vendor keyword ``x-rules`` on an object schema, a list of
``{"field": <name>, <op>: <other name>}`` with ``op`` one of ``lt le gt ge eq ne``; a broken rule
is reported naming both fields: ``fast (30) must be less than slow (20)``.

Example:
    >>> schema = {"type": "object", "properties": {
    ...     "fast": {"type": "integer", "minimum": 1, "default": 10},
    ...     "slow": {"type": "integer", "minimum": 2, "default": 20}},
    ...     "x-rules": [{"field": "fast", "lt": "slow"}]}
    >>> validate_params(schema, {"slow": 30})
    {'slow': 30, 'fast': 10}
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

from virtufin.errors import WorkerLoadError, WorkerParamsError

__all__ = ["check_schema", "validate_params"]

_ANNOTATIONS: Final = frozenset({"title", "description", "examples", "$schema", "$comment", "$id"})
_KEYWORDS: Final = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "default",
        "enum",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "items",
        "minItems",
        "maxItems",
        "x-rules",
    }
)
_TYPES: Final = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
_RULES: Final[Mapping[str, tuple[Callable[[Any, Any], bool], str]]] = {
    "lt": (operator.lt, "less than"),
    "le": (operator.le, "at most"),
    "gt": (operator.gt, "greater than"),
    "ge": (operator.ge, "at least"),
    "eq": (operator.eq, "equal to"),
    "ne": (operator.ne, "different from"),
}


def _type_ok(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, Mapping)
    if name == "array":
        return isinstance(value, list | tuple)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, int | float)  # number


def check_schema(schema: Mapping[str, Any], *, worker_id: str = "", where: str = "") -> None:
    """Refuse schemas that use keywords this validator does not enforce.

    Raises:
        WorkerLoadError: naming the keyword and where it is.
    """
    at = where or "params_schema"
    if not isinstance(schema, Mapping):
        raise WorkerLoadError(worker_id, f"{at}: a schema must be a JSON object")
    for key in schema:
        if key not in _KEYWORDS and key not in _ANNOTATIONS:
            raise WorkerLoadError(worker_id, f"{at}: unsupported schema keyword {key!r}")
    types = schema.get("type")
    for name in [types] if isinstance(types, str) else types or []:
        if name not in _TYPES:
            raise WorkerLoadError(worker_id, f"{at}: unknown type {name!r}")
    for name, sub in (schema.get("properties") or {}).items():
        check_schema(sub, worker_id=worker_id, where=f"{at}.properties.{name}")
    if isinstance(schema.get("items"), Mapping):
        check_schema(schema["items"], worker_id=worker_id, where=f"{at}.items")
    for rule in schema.get("x-rules") or []:
        ops = [k for k in rule if k in _RULES] if isinstance(rule, Mapping) else []
        if "field" not in rule or len(ops) != 1:
            raise WorkerLoadError(worker_id, f"{at}: x-rules entries are {{field, <op>: other}}")


def _validate(schema: Mapping[str, Any], value: Any, path: str, problems: list[str]) -> Any:
    where = path or "params"
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_type_ok(value, n) for n in names):
            problems.append(f"{where}: {value!r} is not of type {' or '.join(names)}")
            return value
        if names == ["integer"] and isinstance(value, float):
            value = int(value)
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} is not one of {list(schema['enum'])!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: {value!r} is less than the minimum {schema['minimum']!r}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: {value!r} is more than the maximum {schema['maximum']!r}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            problems.append(f"{where}: {value!r} must be more than {schema['exclusiveMinimum']!r}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            problems.append(f"{where}: {value!r} must be less than {schema['exclusiveMaximum']!r}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(f"{where}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{where}: longer than {schema['maxLength']} characters")
    if isinstance(value, list | tuple):
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(f"{where}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{where}: more than {schema['maxItems']} items")
        if isinstance(schema.get("items"), Mapping):
            value = [
                _validate(schema["items"], item, f"{where}[{i}]", problems)
                for i, item in enumerate(value)
            ]
    if isinstance(value, Mapping):
        value = _validate_object(schema, value, path, problems)
    return value


def _validate_object(
    schema: Mapping[str, Any], value: Mapping[str, Any], path: str, problems: list[str]
) -> dict[str, Any]:
    props: Mapping[str, Any] = schema.get("properties") or {}
    prefix = f"{path}." if path else ""
    out: dict[str, Any] = {}
    for name, item in value.items():
        if name in props:
            out[name] = _validate(props[name], item, prefix + name, problems)
        elif schema.get("additionalProperties", True) is False:
            problems.append(f"{prefix}{name}: unknown parameter")
        else:
            out[name] = item
    for name, sub in props.items():
        if name not in out and "default" in sub:
            out[name] = sub["default"]
    for name in schema.get("required") or []:
        if name not in out:
            problems.append(f"{prefix}{name}: required")
    for rule in schema.get("x-rules") or []:
        field = rule["field"]
        op = next(k for k in rule if k in _RULES)
        other = rule[op]
        if field in out and other in out:
            check, words = _RULES[op]
            try:
                ok = check(out[field], out[other])
            except TypeError:
                ok = False
            if not ok:
                problems.append(
                    f"{prefix}{field} ({out[field]!r}) must be {words} {prefix}{other} "
                    f"({out[other]!r})"
                )
    return out


def validate_params(
    schema: Mapping[str, Any], params: Mapping[str, Any], *, worker_id: str = ""
) -> dict[str, Any]:
    """Check `params` against `schema`; return them with defaults filled in.

    Raises:
        WorkerLoadError: the schema itself uses an unsupported keyword.
        WorkerParamsError: every problem found, each naming its parameter.
    """
    check_schema(schema, worker_id=worker_id)
    problems: list[str] = []
    result = _validate(schema, dict(params), "", problems)
    if problems:
        raise WorkerParamsError(worker_id, problems)
    return dict(result)
