"""Config loaders: every broken file gives one error naming the file, the field and the reason;
environment variables and flags override files, in that order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from virtufin.config import load_services, load_settings, load_versions, parse_versions
from virtufin.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _service(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "gateway",
        "daprAppId": "virtufin-gateway",
        "module": "services.gateway",
        "grpc": {"host": "127.0.0.1", "port": 5002},
    }
    entry.update(changes)
    return entry


def _write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "services.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


BAD_SERVICES = [
    ("{not json", "line 1 column 2", "Expecting property name"),
    ({"services": [_service(grpc={"port": 70000})]}, "services.0.grpc.port", "less than or equal"),
    ({"services": [_service(grpc={"port": "x"})]}, "services.0.grpc.port", "valid integer"),
    ({"services": [_service(name="Gate Way")]}, "services.0.name", "lower-case letters"),
    ({"services": [_service(daprAppId=None)]}, "services.0.daprAppId", "valid string"),
    ({"services": [_service(colour="red")]}, "services.0.colour", "Extra inputs"),
    ({"services": [_service(), _service()]}, "(top level)", "service name 'gateway' appears twice"),
    (
        {"services": [_service(), _service(name="b", grpc={"port": 5002})]},
        "(top level)",
        "port 5002 of 'b' is also 'gateway'",
    ),
    ({"services": [_service(jobs={"crons": ["every day"]})]}, "jobs.crons", "five-field cron"),
    ({"services": [_service(publishes=["act.>.x"])]}, "services.0.publishes", "must be the last"),
    ({"services": [_service(module="not a module")]}, "services.0.module", "dotted module"),
    ({"service": []}, "services", "Field required"),
]


@pytest.mark.parametrize(("content", "field", "reason"), BAD_SERVICES)
def test_broken_services_json_names_file_field_and_reason(
    tmp_path: Path, content: Any, field: str, reason: str
) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(ConfigError) as info:
        load_services(path)
    assert info.value.file == str(path)
    assert field in info.value.field
    assert reason in info.value.reason
    assert str(path) in str(info.value)


BAD_VERSIONS = [
    ("JUST_A_KEY", "line 1", "expected KEY=VALUE"),
    ("lower=1", "line 1 (lower)", "keys are upper-case"),
    ("A=1\nA=2", "line 2 (A)", "is set twice"),
    ("A=", "line 1 (A)", "has no value"),
    ("A=$HOME", "line 1 (A)", "shell expansion is not supported"),
    ("# ok\n\nB=`date`", "line 3 (B)", "shell expansion"),
]


@pytest.mark.parametrize(("text", "field", "reason"), BAD_VERSIONS)
def test_broken_versions_env_names_the_line_and_reason(text: str, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_versions(text, path="v.env")
    assert (info.value.file, info.value.field) == ("v.env", field)
    assert reason in info.value.reason


def test_versions_env_keeps_values_literally() -> None:
    versions = parse_versions("# c\nA = 1.2.3\nB='x y'\nPY_NATS_PY=2.16.0\n")
    assert versions.entries == {"A": "1.2.3", "B": "x y", "PY_NATS_PY": "2.16.0"}
    assert versions.python_pins() == {"nats-py": "2.16.0"}
    with pytest.raises(ConfigError, match="MISSING: is not set"):
        versions["MISSING"]


def test_missing_files_are_reported_by_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_services(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_versions(tmp_path / "nope.env")


def test_the_projects_own_files_load() -> None:
    services = load_services(ROOT / "services.json")
    assert services.names == ("gateway", "workmanager", "marketdata", "execution")
    assert services.get("gateway").grpc.address == "127.0.0.1:5002"
    assert load_versions(ROOT / "versions.env")["NATIVE_ABI_VERSION"] == "1"


def test_environment_then_flags_override_the_file() -> None:
    services = load_services(ROOT / "services.json")
    env = {"VIRTUFIN_GATEWAY_GRPC_PORT": "6002", "VIRTUFIN_WORKMANAGER_GRPC_HOST": "0.0.0.0"}
    overridden = services.with_overrides(env)
    assert overridden.get("gateway").grpc.port == 6002
    assert overridden.get("workmanager").grpc.host == "0.0.0.0"
    both = services.with_overrides(env, {"gateway.grpc.port": 7002})
    assert both.get("gateway").grpc.port == 7002
    assert services.get("gateway").grpc.port == 5002  # the loaded config never changes
    with pytest.raises(ConfigError, match=r"grpc\.port"):
        services.with_overrides({"VIRTUFIN_GATEWAY_GRPC_PORT": "not-a-port"})


def test_settings_precedence_defaults_env_flags() -> None:
    assert load_settings(env={}).bus == "memory"
    assert load_settings(env={}).state == "sqlite"
    env = {"VIRTUFIN_BUS": "nats", "VIRTUFIN_STATE": "redis", "VIRTUFIN_API_KEYS": "a, b,"}
    from_env = load_settings(env=env)
    assert (from_env.bus, from_env.state, from_env.api_keys) == ("nats", "redis", ("a", "b"))
    flagged = load_settings(env=env, flags={"state": "postgres", "bus": None})
    assert (flagged.bus, flagged.state) == ("nats", "postgres")
    assert load_settings(env={"pubsubName": "jetstream"}).pubsub_name == "jetstream"


@pytest.mark.parametrize(
    ("env", "flags", "message"),
    [
        ({"VIRTUFIN_BUS": "kafka"}, None, "environment variable VIRTUFIN_BUS"),
        ({}, {"state": "mongo"}, "flag --state"),
        ({}, {"colour": "red"}, "--colour: unknown option"),
    ],
)
def test_bad_settings_name_their_origin(
    env: dict[str, str], flags: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env, flags=flags)
