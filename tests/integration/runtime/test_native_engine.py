"""Native workers through cffi: the ABI checks, the host struct, outputs, failures, safe mode."""

from __future__ import annotations

import json
import logging
import socket

import cffi
import pytest

from virtufin.client import GatewayBridge
from virtufin.errors import GatewayCallError, WorkerEventError, WorkerLoadError
from virtufin.runtime.engine import EngineStatus
from virtufin.runtime.factory import create_engine
from virtufin.runtime.native import NativeEngine, NativeSafeEngine
from virtufin.runtime.native_lib import ffi
from virtufin.runtime.routing import Binding


def op(name: str) -> dict[str, str]:
    return {"op": name}


@pytest.fixture
def probe_counters(cworkers):
    """Read the probe's counters through a second cffi handle on the same library."""
    side = cffi.FFI()
    side.cdef("int32_t ProbeLiveBuffers(void); const char* ProbeConfigured(void);")
    lib = side.dlopen(str(cworkers["probe"]))
    yield lib
    side.dlclose(lib)


def test_host_struct_is_40_bytes_with_the_documented_offsets(native_manifest, make_event):
    assert ffi.sizeof("VirtufinHost") == 40
    with create_engine(native_manifest("probe")) as engine:
        (out,) = engine.process(make_event(op("layout")))
    assert out.data == {"size": 40, "abi": 1, "log": 16, "gateway_call": 24, "free_response": 32}


def test_outputs_are_stamped_and_every_buffer_is_freed_once(
    native_manifest, make_event, probe_counters
):
    with create_engine(native_manifest("probe")) as engine:
        assert isinstance(engine, NativeEngine)
        ev = make_event(op("echo"), correlationid="c-9", scenarioid="S1")
        (out,) = engine.process(ev)
        assert out.type == "probe.echo"
        assert out.data["id"] == ev.id  # the structured CloudEvent went in
        assert out.data["data"] == {"op": "echo"}
        assert out.source == "urn:com.virtufin.worker.probe"
        assert out.correlationid == "c-9"
        assert engine.process(make_event(op("none"))) == []
        assert [o.type for o in engine.process(make_event(op("array")))] == [
            "probe.one",
            "probe.two",
        ]
        with pytest.raises(WorkerEventError):
            engine.process(make_event(op("garbage")))
        assert probe_counters.ProbeLiveBuffers() == 0


def test_configure_gets_worker_id_params_and_env(native_manifest, probe_counters):
    engine = create_engine(
        native_manifest("probe"), params={"fast": 3}, binding=Binding(env={"MODE": "x"})
    )
    with engine:
        got = json.loads(ffi.string(probe_counters.ProbeConfigured()).decode())
    assert got == {"worker_id": "probe", "params": {"fast": 3}, "env": {"MODE": "x"}}


def test_configure_refusal_is_a_load_error(native_manifest):
    with pytest.raises(WorkerLoadError, match="Configure returned 2"):
        create_engine(native_manifest("probe"), params={"refuse": True}).load()


def test_log_lines_reach_python_logging(native_manifest, make_event, caplog):
    caplog.set_level(logging.INFO, logger="virtufin.runtime.native_lib")
    with create_engine(native_manifest("probe")) as engine:
        engine.process(make_event(op("log")))
    assert "[probe] probe says hi" in caplog.text


def test_gateway_call_reaches_the_binding(native_manifest, make_event):
    calls = []

    def gateway(service: str, method: str, request: bytes) -> bytes:
        calls.append((service, method, json.loads(request)))
        return b'{"answer":42}'

    with create_engine(native_manifest("probe"), binding=Binding(gateway=gateway)) as engine:
        (out,) = engine.process(make_event(op("gateway")))
    assert calls == [("svc", "Method", {"q": 1})]
    assert out.data == {"rc": 0, "response": {"answer": 42}}


def test_gateway_call_without_a_gateway_answers_unavailable(native_manifest, make_event):
    with create_engine(native_manifest("probe")) as engine:
        assert not engine.blocking  # no gateway: events run on the host's loop
        (out,) = engine.process(make_event(op("gateway")))
    assert out.data == {"rc": -1}


def _call(service: str, method: str) -> dict[str, object]:
    return {"op": "call", "service": service, "method": method, "request": {"q": {"r": 1}}}


def test_gateway_call_failures_come_back_as_a_status_code_and_message(
    native_manifest, make_event, probe_counters
):
    def gateway(service: str, method: str, request: bytes) -> bytes:
        if service == "gone":
            raise GatewayCallError(f"{service}.{method}", 5, "NOT_FOUND", "no backend 'gone'")
        if service == "broken":
            raise RuntimeError("kaput")
        return json.dumps({"echo": json.loads(request)}).encode()

    manifest = native_manifest("probe")
    with create_engine(manifest, binding=Binding(gateway=gateway)) as engine:
        assert engine.blocking  # a gateway call may block: async hosts use a worker thread
        outs = [engine.process(make_event(_call(s, "M")))[0].data for s in ("ok", "gone", "broken")]
    assert outs[0] == {"rc": 0, "response": {"echo": {"q": {"r": 1}}}}
    assert outs[1] == {
        "rc": 5,
        "response": {"code": 5, "status": "NOT_FOUND", "message": "no backend 'gone'"},
    }
    assert outs[2]["rc"] == 13
    assert outs[2]["response"]["message"] == "the host failed: RuntimeError: kaput"
    assert probe_counters.ProbeLiveBuffers() == 0


def test_safe_mode_child_calls_the_gateway_itself(native_manifest, make_event):
    with socket.socket() as sock:  # a port nobody listens on: the gateway is down
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bridge = GatewayBridge(f"127.0.0.1:{port}", api_key="k", timeout=2.0)
    try:
        manifest = native_manifest("probe", isolation="process", event_timeout_secs=10.0)
        with create_engine(manifest, binding=Binding(gateway=bridge)) as engine:
            assert isinstance(engine, NativeSafeEngine)
            (out,) = engine.process(make_event(_call("workmanager", "ListWorkers")))
    finally:
        bridge.close()
    assert out.data["rc"] == 14
    assert out.data["response"]["status"] == "UNAVAILABLE"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("fail", "Process returned 7: probe refused the event"), ("number", "expected a dict")],
)
def test_failed_or_garbage_events_are_event_errors(native_manifest, make_event, name, expected):
    with create_engine(native_manifest("probe")) as engine:
        with pytest.raises(WorkerEventError, match=expected):
            engine.process(make_event(op(name)))
        assert len(engine.process(make_event(op("echo")))) == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bad_abi", "built for native ABI version 2; this host speaks version 1"),
        ("no_version", "does not export VirtufinAbiVersion"),
        ("no_free", "does not export FreeResult"),
    ],
)
@pytest.mark.parametrize("isolation", ["in_process", "process"])
def test_abi_mismatches_are_refused_at_load(native_manifest, name, expected, isolation):
    engine = create_engine(native_manifest(name, isolation=isolation))
    with pytest.raises(WorkerLoadError, match=expected):
        engine.load()


def test_missing_library_and_manifest_abi_version(native_manifest, tmp_path):
    missing = native_manifest("probe").model_copy(update={"entry_point": str(tmp_path / "x.so")})
    with pytest.raises(WorkerLoadError, match="no such library"):
        create_engine(missing).load()
    not_a_lib = tmp_path / "libtext.so"
    not_a_lib.write_text("hello")
    bogus = missing.model_copy(update={"entry_point": str(not_a_lib)})
    with pytest.raises(WorkerLoadError, match="cannot load"):
        create_engine(bogus).load()


def test_safe_mode_survives_a_segfault(native_manifest, make_event, caplog):
    manifest = native_manifest("probe", isolation="process", max_attempts=2)
    with create_engine(manifest) as engine:
        assert isinstance(engine, NativeSafeEngine)
        (out,) = engine.process(make_event(op("echo")))
        assert out.type == "probe.echo"
        with pytest.raises(WorkerEventError) as info:
            engine.process(make_event(op("crash")))
        assert "SIGSEGV" in info.value.reason
        assert info.value.attempts == 2
        assert engine.health().status is EngineStatus.DEGRADED
        assert [o.type for o in engine.process(make_event(op("array")))] == [
            "probe.one",
            "probe.two",
        ]
        assert engine.health().restarts == 2


def test_safe_mode_times_out_a_hung_library(native_manifest, make_event):
    manifest = native_manifest("probe", isolation="process", event_timeout_secs=0.3, max_attempts=1)
    with create_engine(manifest) as engine:
        with pytest.raises(WorkerEventError, match=r"timed out after 0\.3 s"):
            engine.process(make_event(op("hang")))
        with pytest.raises(WorkerEventError, match="Process returned 7"):
            engine.process(make_event(op("fail")))
        with pytest.raises(WorkerEventError, match="not JSON"):
            engine.process(make_event(op("garbage")))


def test_safe_mode_load_failures_are_load_errors(native_manifest):
    with pytest.raises(WorkerLoadError, match="Configure returned 2"):
        create_engine(native_manifest("probe", isolation="process"), params={"refuse": True}).load()
