"""The parameter schema subset: defaults, types, bounds, enums, required, cross-field rules."""

from __future__ import annotations

import pytest

from virtufin.errors import WorkerLoadError, WorkerParamsError
from workers.kit import check_schema, validate_params

SMA = {
    "type": "object",
    "properties": {
        "fast": {"type": "integer", "minimum": 1, "default": 10},
        "slow": {"type": "integer", "minimum": 2, "default": 20},
        "mode": {"type": "string", "enum": ["close", "hl2"], "default": "close"},
        "weights": {"type": "array", "items": {"type": "number", "maximum": 1}, "maxItems": 3},
        "ratio": {"type": ["number", "null"], "exclusiveMinimum": 0},
    },
    "additionalProperties": False,
    "x-rules": [{"field": "fast", "lt": "slow"}],
}


def problems(params, schema=SMA) -> list[str]:
    with pytest.raises(WorkerParamsError) as info:
        validate_params(schema, params, worker_id="sma")
    return info.value.problems


def test_defaults_fill_missing_parameters():
    assert validate_params(SMA, {"slow": 30}) == {
        "slow": 30,
        "fast": 10,
        "mode": "close",
    }


def test_cross_field_rule_names_both_fields():
    assert problems({"fast": 30, "slow": 20}) == ["fast (30) must be less than slow (20)"]


def test_every_problem_is_reported_with_its_parameter():
    found = problems(
        {"fast": 0, "slow": "x", "mode": "open", "weights": [0.5, 2, 0.1, 0.1], "extra": 1}
    )
    assert "fast: 0 is less than the minimum 1" in found
    assert "slow: 'x' is not of type integer" in found
    assert "mode: 'open' is not one of ['close', 'hl2']" in found
    assert "weights[1]: 2 is more than the maximum 1" in found
    assert "weights: more than 3 items" in found
    assert "extra: unknown parameter" in found


def test_types_bools_are_not_numbers_and_integral_floats_are_integers():
    assert problems({"fast": True}) == ["fast: True is not of type integer"]
    assert validate_params(SMA, {"fast": 5.0})["fast"] == 5
    assert isinstance(validate_params(SMA, {"fast": 5.0})["fast"], int)
    assert validate_params(SMA, {"ratio": None})["ratio"] is None
    assert problems({"ratio": 0}) == ["ratio: 0 must be more than 0"]


def test_required_parameters():
    schema = {"type": "object", "properties": {"limit": {"type": "number"}}, "required": ["limit"]}
    assert problems({}, schema) == ["limit: required"]


def test_the_error_carries_the_worker_id():
    with pytest.raises(WorkerParamsError) as info:
        validate_params(SMA, {"fast": 50}, worker_id="sma")
    assert info.value.worker_id == "sma"
    assert str(info.value) == (
        "worker 'sma': invalid parameters: fast (50) must be less than slow (20)"
    )


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "object", "pattern": "x"}, "unsupported schema keyword 'pattern'"),
        ({"properties": {"a": {"type": "int"}}}, "unknown type 'int'"),
        ({"properties": {"a": {"format": "date"}}}, "params_schema.properties.a"),
        ({"x-rules": [{"field": "a"}]}, "x-rules entries"),
    ],
)
def test_unsupported_schemas_are_refused(schema, message):
    with pytest.raises(WorkerLoadError, match=message.replace("[", r"\[")):
        check_schema(schema)
