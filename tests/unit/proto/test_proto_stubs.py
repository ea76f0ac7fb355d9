"""The protobuf contracts: the build, the generated stubs, and the public RPC surface."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from virtufin.proto import build, ensure_built

PROJECT_ROOT = build.PROTO_DIR.parent.parent
STEMS = ("common", "execution", "gateway", "marketdata", "worker", "workmanager")

# The public RPC surface, per generated module and service. A rename or a dropped RPC is a
# breaking change for every client and must show up here.
EXPECTED_SERVICES: dict[str, dict[str, set[str]]] = {
    "common": {},
    "worker": {},
    "gateway": {
        "Gateway": {
            "Invoke",
            "InvokeJson",
            "ListServices",
            "ListMethods",
            "GetMethodSchema",
            "Subscribe",
        },
        "State": {"SaveState", "GetState", "GetAllState", "RegisterKeys", "DeleteState"},
        "Pubsub": {"PublishEvent", "Subscribe", "Unsubscribe"},
        "Config": {"ListServices", "GetService"},
    },
    "workmanager": {
        "WorkManager": {
            "CreateWorker",
            "ListWorkers",
            "DeleteWorker",
            "StartWorker",
            "StopWorker",
            "RecoverWorkers",
            "GetWorkerHistory",
            "LoadCode",
            "SetEnvironmentVariable",
            "SetEnvironmentVariables",
            "GetEnvironmentVariables",
            "SetTag",
            "SetTags",
            "GetTags",
        },
    },
    "marketdata": {
        "MarketData": {
            "Connect",
            "List",
            "Disconnect",
            "StartPublish",
            "StopPublish",
            "Send",
            "StartReplay",
            "StopReplay",
            "ListReplays",
        },
    },
    "execution": {
        "Execution": {"GetPositions", "GetOrders", "SetRiskLimits", "GetRiskLimits"},
    },
}

SERVER_STREAMING = {("Gateway", "Subscribe"), ("Pubsub", "Subscribe")}


def _mtimes() -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in build.expected_outputs()}


def _gen(name: str) -> ModuleType:
    return importlib.import_module(f"virtufin.proto.gen.{name}")


@pytest.fixture(scope="module")
def built() -> dict[Path, int]:
    """Run a real (forced) build once for this module; returns the outputs' mtimes."""
    assert build.build(force=True) is True
    return _mtimes()


def test_build_produces_every_output(built: dict[Path, int]) -> None:
    assert {p.name for p in build.sources()} == {f"{stem}.proto" for stem in STEMS}
    expected = {f"{stem}{suffix}" for stem in STEMS for suffix in ("_pb2.py", "_pb2.pyi")}
    expected |= {f"{stem}_pb2_grpc.py" for stem in STEMS} | {"__init__.py"}
    assert {p.name for p in built} == expected
    assert all(p.parent == build.GEN_DIR and p.is_file() for p in built)
    assert not build.is_stale()


def test_second_build_is_a_no_op(built: dict[Path, int]) -> None:
    before = _mtimes()
    assert build.build() is False
    ensure_built()
    result = subprocess.run(
        [sys.executable, "-m", "virtufin.proto.build"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert build.main(["--check"]) == 0
    assert _mtimes() == before


def test_every_generated_module_imports_in_a_fresh_interpreter(built: dict[Path, int]) -> None:
    modules = [f"virtufin.proto.gen.{s}{m}" for s in STEMS for m in ("_pb2", "_pb2_grpc")]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    result = subprocess.run(
        [sys.executable, "-c", code, *modules],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for name in modules:
        assert _gen(name.rsplit(".", 1)[1]).__name__ == name


def test_generated_modules_import_each_other_through_the_package(built: dict[Path, int]) -> None:
    common, gateway, worker = _gen("common_pb2"), _gen("gateway_pb2"), _gen("worker_pb2")
    deps = {d.name for d in gateway.DESCRIPTOR.dependencies}
    assert deps == {"google/protobuf/timestamp.proto", "virtufin/proto/gen/common.proto"}
    cloudevent = gateway.PublishEventRequest.DESCRIPTOR.fields_by_name["cloudevent"]
    assert cloudevent.message_type is common.CloudEvent.DESCRIPTOR
    frame_event = worker.Frame.DESCRIPTOR.fields_by_name["cloud_event"]
    assert frame_event.message_type is common.CloudEvent.DESCRIPTOR
    for stem in STEMS:
        assert _gen(f"{stem}_pb2").DESCRIPTOR.package == "virtufin"


def test_cloudevent_round_trip_preserves_fields(built: dict[Path, int]) -> None:
    common = _gen("common_pb2")
    event = common.CloudEvent(
        id="0b9c5e1e-7d5f-4d5e-9a51-2f0c6f4f1a10",
        source="urn:com.virtufin.marketdata",
        spec_version="1.0",
        type="com.virtufin.exchange.binance.trade.tape",
        data_content_type="application/json",
        data_schema="https://schemas.virtufin.local/trade.json",
        subject="trade/BTCUSDT",
        time="2008-09-15T13:30:00.123456Z",
        extensions={"scenarioid": "S7F3A9B", "clocktype": "historical", "marketlane": "hyp"},
        text_data='{"price": 101.5, "qty": 2}',
    )
    wire = event.SerializeToString()
    back = common.CloudEvent.FromString(wire)
    assert back == event
    assert back.WhichOneof("data") == "text_data"
    assert back.text_data == '{"price": 101.5, "qty": 2}'
    assert dict(back.extensions) == {
        "scenarioid": "S7F3A9B",
        "clocktype": "historical",
        "marketlane": "hyp",
    }
    assert (back.id, back.source, back.type) == (event.id, event.source, event.type)
    assert (back.subject, back.time, back.spec_version) == ("trade/BTCUSDT", event.time, "1.0")

    back.binary_data = b"\x00\xffraw"
    assert back.WhichOneof("data") == "binary_data"
    assert not back.text_data
    again = common.CloudEvent.FromString(back.SerializeToString())
    assert again.binary_data == b"\x00\xffraw"
    assert again.WhichOneof("data") == "binary_data"


def test_workerinfo_round_trip_preserves_fields(built: dict[Path, int]) -> None:
    wm = _gen("workmanager_pb2")
    info = wm.WorkerInfo(
        id="momentum-1",
        code_source=wm.CodeSource(content=b"def Process(event):\n    return None\n"),
        mime_type="text/x-python",
        language="python",
        topic="hyp.EQ_2008_2009.exchange.binance.trade.tape.>",
        group="momentum",
        status=wm.WORKER_STATUS_RUNNING,
        env={"LOG_LEVEL": "debug"},
        tags={"type": "strategy"},
        version="0.0.60-sha.1a2b3c4d",
        parameters_json='{"window": 20}',
        scenario_id="S7F3A9B",
    )
    info.code_source.content_sha256 = "ab" * 32
    info.created_at.FromSeconds(1_221_485_400)
    back = wm.WorkerInfo.FromString(info.SerializeToString())
    assert back == info
    assert back.code_source.WhichOneof("source") == "content"
    assert back.code_source.content.startswith(b"def Process")
    assert back.code_source.content_sha256 == "ab" * 32
    assert back.status == wm.WORKER_STATUS_RUNNING
    assert wm.WorkerStatus.Name(back.status) == "WORKER_STATUS_RUNNING"
    assert dict(back.env) == {"LOG_LEVEL": "debug"}
    assert dict(back.tags) == {"type": "strategy"}
    assert back.created_at.ToSeconds() == 1_221_485_400
    assert (back.version, back.parameters_json, back.scenario_id) == (
        "0.0.60-sha.1a2b3c4d",
        '{"window": 20}',
        "S7F3A9B",
    )
    url = wm.CodeSource(url="https://code.virtufin.local/w.py")
    assert wm.CodeSource.FromString(url.SerializeToString()).WhichOneof("source") == "url"


@pytest.mark.parametrize("stem", STEMS)
def test_service_descriptors_list_exactly_the_contract_rpcs(
    built: dict[Path, int], stem: str
) -> None:
    pb2, grpc_mod = _gen(f"{stem}_pb2"), _gen(f"{stem}_pb2_grpc")
    services = pb2.DESCRIPTOR.services_by_name
    assert set(services) == set(EXPECTED_SERVICES[stem])
    for name, rpcs in EXPECTED_SERVICES[stem].items():
        methods = services[name].methods_by_name
        assert set(methods) == rpcs, name
        for rpc, method in methods.items():
            assert method.client_streaming is False, (name, rpc)
            assert method.server_streaming is ((name, rpc) in SERVER_STREAMING), (name, rpc)
        assert hasattr(grpc_mod, f"{name}Stub")
        assert hasattr(grpc_mod, f"{name}Servicer")
        assert hasattr(grpc_mod, f"add_{name}Servicer_to_server")


def test_wire_field_numbers_are_pinned(built: dict[Path, int]) -> None:
    common, gateway, wm = _gen("common_pb2"), _gen("gateway_pb2"), _gen("workmanager_pb2")

    def numbers(message: Any) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}

    assert numbers(wm.CodeSource) == {"url": 1, "content": 2, "content_sha256": 3}
    assert [n for _, n in sorted(numbers(wm.WorkerInfo).items(), key=lambda kv: kv[1])] == list(
        range(1, 15)
    )
    assert numbers(wm.WorkerInfo)["scenario_id"] == 13
    assert dict(wm.WorkerStatus.items()) == {
        "WORKER_STATUS_UNSPECIFIED": 0,
        "WORKER_STATUS_STOPPED": 1,
        "WORKER_STATUS_RUNNING": 2,
        "WORKER_STATUS_FAILED": 3,
    }
    assert numbers(common.CloudEvent)["binary_data"] == 10
    assert numbers(common.CloudEvent)["text_data"] == 11
    assert numbers(gateway.TopicEventRequest) == {
        "id": 1,
        "source": 2,
        "type": 3,
        "spec_version": 4,
        "data_content_type": 5,
        "topic": 6,
        "data": 7,
        "pubsub_name": 8,
        "path": 9,
        "extensions": 10,
        "subject": 11,
        "time": 12,
    }


@pytest.fixture
def restore_source_mtime() -> Iterator[Path]:
    source = build.PROTO_DIR / "common.proto"
    before = source.stat()
    try:
        yield source
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_newer_source_makes_the_stubs_stale(
    built: dict[Path, int], restore_source_mtime: Path
) -> None:
    assert not build.is_stale()
    newest_output = max(built.values())
    os.utime(restore_source_mtime, ns=(newest_output + 10**9, newest_output + 10**9))
    assert build.is_stale()
    assert build.main(["--check"]) == 1


def test_leftover_modules_of_deleted_sources_are_removed(built: dict[Path, int]) -> None:
    leftover = build.GEN_DIR / "zz_removed_for_test_pb2.py"
    leftover.write_text("raise ImportError('stale')\n", encoding="utf-8")
    try:
        assert build.is_stale()
        assert build.build() is True
        assert not leftover.exists()
        assert not build.is_stale()
    finally:
        leftover.unlink(missing_ok=True)
