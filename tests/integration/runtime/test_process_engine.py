"""The ``text/x-python`` engine: frames, failure handling, restarts, sandbox, batches."""

from __future__ import annotations

import logging
import time

import pytest

from virtufin.errors import WorkerError, WorkerEventError, WorkerLoadError
from virtufin.runtime.engine import EngineStatus
from virtufin.runtime.factory import create_engine
from virtufin.runtime.process import PythonScriptEngine

ECHO = """
    def Process(event):
        return {"type": "com.example.echo", "source": "ignored", "data": event["data"]}
"""


def test_script_round_trip_stamps_outputs(script, make_event):
    with create_engine(script(ECHO)) as engine:
        assert isinstance(engine, PythonScriptEngine)
        ev = make_event({"x": 1}, correlationid="c-1", scenarioid="S1", runid="r1")
        (out,) = engine.process(ev)
    assert out.type == "com.example.echo"
    assert out.data == {"x": 1}
    assert out.source == "urn:com.virtufin.worker.w"
    assert (out.correlationid, out.scenarioid, out.runid) == ("c-1", "S1", "r1")


def test_none_and_lists_of_outputs(script, make_event):
    src = """
        def Process(event):
            n = event["data"]
            return None if n == 0 else [{"type": "t.n", "data": i} for i in range(n)]
    """
    with create_engine(script(src)) as engine:
        assert engine.process(make_event(0)) == []
        assert [o.data for o in engine.process(make_event(3))] == [0, 1, 2]


def test_raising_script_fails_the_event_not_the_worker(script, make_event):
    src = """
        def Process(event):
            if event["data"] == "boom":
                raise ValueError("bad bar")
            return {"type": "t.ok", "data": 1}
    """
    with create_engine(script(src)) as engine:
        with pytest.raises(WorkerEventError) as info:
            engine.process(make_event("boom"))
        assert "ValueError: bad bar" in info.value.reason
        assert info.value.attempts == 1
        assert len(engine.process(make_event("fine"))) == 1
        assert engine.health().restarts == 0
        assert engine.metrics.snapshot().errors == 1


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("42", "Process returned int"),
        ("{'data': 1}", "no 'type' string"),
        ("{'type': 't', 'data': object()}", "not JSON serializable"),
    ],
)
def test_garbage_output_is_an_event_error(script, make_event, returned, expected):
    with create_engine(script(f"def Process(event):\n    return {returned}\n")) as engine:
        with pytest.raises(WorkerEventError, match=expected):
            engine.process(make_event(1))
        assert engine.health().restarts == 0


def test_hung_child_times_out_is_restarted_and_the_event_dead_lettered(script, make_event):
    src = """
        import time
        def Process(event):
            if event["data"] == "hang":
                time.sleep(60)
            return {"type": "t.ok", "data": event["data"]}
    """
    with create_engine(script(src, event_timeout_secs=0.3, max_attempts=2)) as engine:
        started = time.monotonic()
        with pytest.raises(WorkerEventError) as info:
            engine.process(make_event("hang"))
        assert time.monotonic() - started < 5
        assert "timed out after 0.3 s" in info.value.reason
        assert info.value.attempts == 2
        assert engine.health().status is EngineStatus.DEGRADED
        (out,) = engine.process(make_event("next"))
        assert out.data == "next"
        health = engine.health()
        assert health.restarts == 2
        assert health.status is EngineStatus.READY


def test_exiting_child_is_restarted_and_the_event_retried(script, make_event, tmp_path):
    marker = tmp_path / "died-once"
    src = f"""
        import os
        def Process(event):
            if not os.path.exists({str(marker)!r}):
                open({str(marker)!r}, "w").close()
                os._exit(3)
            return {{"type": "t.ok", "data": event["data"]}}
    """
    with create_engine(script(src)) as engine:
        (out,) = engine.process(make_event("retried"))
        assert out.data == "retried"
        health = engine.health()
        assert health.restarts == 1
        assert "exited with code 3" in (health.last_error or "")


def test_too_many_restarts_fail_the_engine(script, make_event):
    src = """
        import os
        def Process(event):
            os._exit(1)
    """
    with create_engine(script(src, max_attempts=2, max_restarts=3)) as engine:
        failures: list[WorkerError] = []
        for _ in range(4):
            try:
                engine.process(make_event(1))
            except WorkerError as exc:
                failures.append(exc)
        kinds = [type(exc).__name__ for exc in failures]
        # 1 initial child + 3 restarts = 4 deaths over two events, then the engine gives up
        assert kinds == ["WorkerEventError", "WorkerEventError", "WorkerError", "WorkerError"]
        assert "restarted 3 times" in failures[2].reason
        assert engine.health().status is EngineStatus.FAILED


def test_ping_finds_and_replaces_a_stuck_child(script, make_event):
    src = """
        import signal, time
        def Process(event):
            if event["data"] == "wedge":  # 50 ms after answering, block the main thread
                signal.signal(signal.SIGALRM, lambda *a: time.sleep(60))
                signal.setitimer(signal.ITIMER_REAL, 0.05)
            return {"type": "t.ok", "data": event["data"]}
    """
    with create_engine(script(src, ping_timeout_secs=0.3)) as engine:
        assert isinstance(engine, PythonScriptEngine)
        assert engine.ping() is True
        engine.process(make_event("wedge"))  # the child blocks in a signal handler afterwards
        time.sleep(0.5)
        assert engine.ping() is False
        assert engine.health().status is EngineStatus.DEGRADED
        assert engine.ping() is True  # a fresh child
        assert engine.health().restarts == 1


def test_background_pings_keep_an_idle_child_checked(script):
    with create_engine(script(ECHO, ping_interval_secs=0.05)) as engine:
        time.sleep(0.8)  # the spawn counts as the first contact: a younger one is a pong
        age = engine.health().details["last_pong_age_secs"]
        assert age is not None
        assert age < 0.7


def test_blocked_modules_cannot_be_imported(script, make_event):
    src = """
        def Process(event):
            import importlib
            name = event["data"]
            try:
                importlib.import_module(name)
            except ImportError as exc:
                return {"type": "t.blocked", "data": str(exc)}
            return {"type": "t.allowed", "data": name}
    """
    with create_engine(script(src)) as engine:
        for name in ("socket", "_socket", "subprocess", "ctypes", "urllib.request"):
            (out,) = engine.process(make_event(name))
            assert out.type == "t.blocked", name
            assert "is blocked in this worker" in out.data
        (out,) = engine.process(make_event("json"))
        assert out.type == "t.allowed"


def test_block_list_is_configurable(script, make_event):
    src = """
        def Process(event):
            import socket
            return {"type": "t.ok", "data": socket.AF_UNIX}
    """
    with create_engine(script(src, blocked_modules=("ctypes",))) as engine:
        assert len(engine.process(make_event(1))) == 1


def test_top_level_blocked_import_refuses_the_load(script):
    engine = create_engine(script("import subprocess\ndef Process(event):\n    return None\n"))
    with pytest.raises(WorkerLoadError, match="subprocess"):
        engine.load()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def Process(event:\n", "SyntaxError"),
        ("x = 1\n", "defines no function Process"),
        ("raise RuntimeError('no config')\n", "RuntimeError: no config"),
    ],
)
def test_scripts_that_cannot_load_give_a_clear_load_error(script, source, expected):
    engine = create_engine(script(source))
    with pytest.raises(WorkerLoadError, match=expected):
        engine.load()
    assert engine.status is EngineStatus.CREATED


def test_missing_script_is_a_load_error(script, tmp_path):
    manifest = script(ECHO).model_copy(update={"entry_point": str(tmp_path / "nope.py")})
    with pytest.raises(WorkerLoadError, match="no such script"):
        create_engine(manifest).load()


def test_stderr_goes_to_warning_logs_and_stdout_is_discarded(script, make_event, caplog):
    src = """
        import sys
        def Process(event):
            print("to stdout")
            print("complaint on stderr", file=sys.stderr, flush=True)
            return None
    """
    caplog.set_level(logging.WARNING, logger="virtufin.worker.w")
    with create_engine(script(src)) as engine:
        engine.process(make_event(1))
        deadline = time.monotonic() + 2
        while "complaint on stderr" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
    assert "complaint on stderr" in caplog.text
    assert "to stdout" not in caplog.text


def test_parameters_and_env_reach_the_script(script, make_event):
    src = """
        import json, os
        def Process(event):
            return {"type": "t.env", "data": {
                "id": os.environ["VIRTUFIN_WORKER_ID"],
                "params": json.loads(os.environ["VIRTUFIN_WORKER_PARAMS"]),
                "mine": os.environ.get("MY_SETTING")}}
    """
    manifest = script(src).model_copy(
        update={"params_schema": {"properties": {"n": {"type": "integer", "default": 3}}}}
    )
    from virtufin.runtime.routing import Binding

    engine = create_engine(manifest, params={"k": "v"}, binding=Binding(env={"MY_SETTING": "on"}))
    with engine:
        (out,) = engine.process(make_event(None))
    assert out.data == {"id": "w", "params": {"k": "v", "n": 3}, "mine": "on"}


def test_batches_answer_each_event_in_one_frame(script, make_event):
    src = """
        def Process(event):
            n = event["data"]
            if n == 3:
                raise KeyError("three")
            return None if n % 2 else {"type": "t.even", "data": n}
    """
    events = [make_event(n) for n in range(6)]
    with create_engine(script(src)) as engine:
        outcomes = engine.process_batch(events)
    assert [o.event for o in outcomes] == events
    assert [[r.envelope.data for r in o.outputs] for o in outcomes] == [[0], [], [2], [], [4], []]
    assert outcomes[3].error is not None
    assert "KeyError" in outcomes[3].error.reason
    assert engine.metrics.snapshot().events_in == 6


def test_a_crash_inside_a_batch_falls_back_to_single_events(script, make_event, tmp_path):
    marker = tmp_path / "crashed"
    src = f"""
        import os
        def Process(event):
            if event["data"] == 2 and not os.path.exists({str(marker)!r}):
                open({str(marker)!r}, "w").close()
                os._exit(9)
            return {{"type": "t.n", "data": event["data"]}}
    """
    with create_engine(script(src)) as engine:
        outcomes = engine.process_batch([make_event(n) for n in range(4)])
    assert [[r.envelope.data for r in o.outputs] for o in outcomes] == [[0], [1], [2], [3]]
    assert all(o.error is None for o in outcomes)


async def test_aprocess_runs_off_the_event_loop(script, make_event):
    with create_engine(script(ECHO)) as engine:
        (out,) = await engine.aprocess(make_event({"a": 1}))
    assert out.data == {"a": 1}


def test_stop_shuts_the_child_down(script):
    engine = create_engine(script(ECHO))
    engine.load()
    pid = engine.health().pid
    assert pid is not None
    engine.stop()
    assert engine.health().status is EngineStatus.STOPPED
    with pytest.raises(WorkerError, match="not ready"):
        engine.process_batch([])  # no events but still refused: the engine is stopped


def test_a_missing_interpreter_is_a_load_error(script):
    engine = create_engine(script(ECHO, python_executable="/nonexistent/python3"))
    with pytest.raises(WorkerLoadError, match="cannot start /nonexistent/python3"):
        engine.load()


def test_large_batches_cross_the_socket_whole(script, bars):
    events = bars * 7  # 2100 events, ~1.5 MB in one frame
    with create_engine(script(ECHO)) as engine:
        outcomes = engine.process_batch(events)
    assert [o.outputs[0].envelope.data for o in outcomes] == [e.data for e in events]
