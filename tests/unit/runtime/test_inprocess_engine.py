"""The in-process class engine: loading, failures on one event, clocks, config classes."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest

from virtufin.envelope import Envelope
from virtufin.errors import WorkerError, WorkerEventError, WorkerLoadError, WorkerParamsError
from virtufin.runtime.engine import EngineStatus
from virtufin.runtime.factory import create_engine
from virtufin.runtime.manifest import WorkerManifest

BAR_TIME = datetime(2024, 2, 2, tzinfo=UTC)
SOURCE = """
from pydantic import BaseModel, ConfigDict, model_validator
from workers.kit import Worker

class Cfg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    low: int = 1
    high: int = 2

    @model_validator(mode="after")
    def _order(self):
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        return self

class Probe(Worker):
    config_class = Cfg

    def on_start(self, ctx):
        self.started = True

    def on_event(self, event):
        if event.data == "raise":
            self.ctx.emit("t.partial")
            raise KeyError("missing")
        if event.data == "return":
            return "oops"
        if event.data == "bad-emit":
            self.ctx.emit("com.virtufin.trading.order.submitted", {}, topic="a.b")
        self.ctx.emit("t.now", {"now": self.ctx.now().isoformat(),
                                "same": self.ctx.event is event,
                                "high": self.ctx.config.high}, topic="t.response")

    def on_stop(self):
        raise RuntimeError("stop errors are logged, not raised")

class Exploding(Worker):
    def on_start(self, ctx):
        raise RuntimeError("cannot start")
"""


@pytest.fixture
def manifest(tmp_path) -> WorkerManifest:
    path = tmp_path / "probe_worker.py"
    path.write_text(textwrap.dedent(SOURCE))
    return WorkerManifest(
        id="probe", mime_type="application/x-python-class", entry_point=f"{path}:Probe"
    )


def ev(data, **attrs) -> Envelope:
    return Envelope.new(type="t.in", source="urn:test", data=data, **attrs)


def test_a_raising_worker_fails_only_that_event(manifest):
    with create_engine(manifest) as engine:
        with pytest.raises(WorkerEventError, match="on_event raised KeyError: 'missing'") as info:
            engine.process(ev("raise"))
        assert info.value.event.data == "raise"
        (out,) = engine.process(ev("fine"))  # the partial emit of the failed event is gone
        assert out.type == "t.now"
        assert engine.metrics.snapshot().errors == 1
        assert engine.health().status is EngineStatus.READY


def test_the_fast_path_counts_events_as_worker_metrics_observe_does(manifest):
    with create_engine(manifest) as engine:
        for _ in range(3):
            engine.process(ev("fine"))
        with pytest.raises(WorkerEventError):
            engine.process(ev("raise"))
        seen = engine.metrics
        assert (seen.events_in, seen.events_out, seen.errors) == (4, 3, 1)
        assert sum(seen.buckets) == 4
        assert seen.total_ns > 0
        snapshot = seen.snapshot()
        assert sum(snapshot.histogram.values()) == 4
        assert snapshot.mean_us > 0


def test_returning_something_or_emitting_wrongly_is_an_event_error(manifest):
    with create_engine(manifest) as engine:
        with pytest.raises(WorkerEventError, match="on_event returned str"):
            engine.process(ev("return"))
        with pytest.raises(WorkerEventError, match="routed to the scenario's topic"):
            engine.process(ev("bad-emit"))


def test_historical_inputs_set_the_clock_live_inputs_use_the_wall(manifest):
    with create_engine(manifest) as engine:
        (out,) = engine.process(ev("x", clocktype="historical", eventtime=BAR_TIME))
        assert out.data == {"now": BAR_TIME.isoformat(), "same": True, "high": 2}
        (live,) = engine.process(ev("x"))
        assert datetime.fromisoformat(live.data["now"]) > BAR_TIME


def test_config_class_rules_name_the_fields(manifest):
    engine = create_engine(manifest, params={"low": 5, "high": 3})
    with pytest.raises(WorkerParamsError, match=r"low \(5\) must be less than high \(3\)"):
        engine.load()
    with pytest.raises(WorkerParamsError, match="bogus: Extra inputs are not permitted"):
        create_engine(manifest, params={"bogus": 1}).load()


def test_on_start_failure_is_a_load_error(manifest):
    entry = manifest.entry_point.replace(":Probe", ":Exploding")
    engine = create_engine(manifest.model_copy(update={"entry_point": entry}))
    with pytest.raises(WorkerLoadError, match="on_start raised RuntimeError: cannot start"):
        engine.load()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("no.such.module:Worker", "cannot import no.such.module:Worker"),
        ("workers.kit:Nope", "cannot find workers.kit:Nope"),
        ("workers.kit:WorkerContext", "is not a subclass of workers.kit.Worker"),
        ("/nowhere/x.py:W", "/nowhere/x.py: no such file"),
        ("not-an-entry-point", "no entry point 'not-an-entry-point' in group virtufin.workers"),
    ],
)
def test_unloadable_classes(entry, message):
    manifest = WorkerManifest(id="w", mime_type="application/x-python-class", entry_point=entry)
    with pytest.raises(WorkerLoadError, match=message):
        create_engine(manifest).load()


def test_a_stopped_engine_refuses_events(manifest):
    engine = create_engine(manifest)
    with pytest.raises(WorkerError, match="engine is created, not ready"):
        engine.process(ev("x"))
    engine.load()
    engine.stop()  # on_stop raising is logged
    engine.stop()  # idempotent
    with pytest.raises(WorkerError, match="engine is stopped"):
        engine.process(ev("x"))


async def test_aprocess_and_batches(manifest):
    with create_engine(manifest) as engine:
        (out,) = await engine.aprocess(ev("a"))
        assert out.type == "t.now"
        outcomes = engine.process_batch([ev("a"), ev("raise"), ev("b")])
        assert [len(o.outputs) for o in outcomes] == [1, 0, 1]
        assert outcomes[1].error is not None
