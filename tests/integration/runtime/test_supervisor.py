"""The supervisor on a real in-process bus: lifecycle, routing, failures, reload, limits."""

from __future__ import annotations

import hashlib
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest

from virtufin import topics
from virtufin.bus.memory import MemoryBus
from virtufin.envelope import Envelope
from virtufin.errors import WorkerError, WorkerLoadError, WorkerParamsError
from virtufin.runtime.lifecycle import HEARTBEAT_TYPE, WorkerState
from virtufin.runtime.manifest import EngineOptions, WorkerManifest
from virtufin.runtime.supervisor import Supervisor, SupervisorConfig
from virtufin.topics import EventTypes

ROOT = Path(__file__).resolve().parents[3]
BAR_TOPIC = topics.bar("binance", "BTCUSDT", interval="1d", selector="SMALL")
FAST = EngineOptions(event_timeout_secs=2, ping_interval_secs=0, restart_backoff_secs=0.01)


class Tap:
    """Records everything published on the bus, by topic."""

    def __init__(self, bus: MemoryBus) -> None:
        self.by_topic: dict[str, list[Envelope]] = defaultdict(list)
        bus.subscribe_sync(">", lambda env, delivery: self.by_topic[delivery.topic].append(env))

    def lifecycle(self, worker_id: str | None = None) -> list[str]:
        return [
            e.type.rsplit(".", 1)[1]
            for e in self.by_topic[topics.WORKMANAGER_LIFECYCLE]
            if worker_id is None or e.data["worker_id"] == worker_id
        ]

    def reasons(self, kind: str) -> list[str]:
        return [
            e.data.get("reason", "")
            for e in self.by_topic[topics.WORKMANAGER_LIFECYCLE]
            if e.type.endswith("." + kind)
        ]

    @property
    def dead(self) -> list[Envelope]:
        return self.by_topic[topics.DEAD_LETTER]


def command(data, **ext) -> Envelope:
    return Envelope.new(
        type="com.virtufin.worker.command.request",
        source="urn:com.virtufin.test",
        data=data,
        correlationid="corr-1",
        extensions=ext,
    )


def class_worker(tmp_path: Path, body: str, name: str = "Flaky", **fields) -> WorkerManifest:
    path = tmp_path / f"{name.lower()}.py"
    path.write_text("from workers.kit import Worker\n\n" + textwrap.dedent(body))
    return WorkerManifest(
        id=name.lower(),
        mime_type="application/x-python-class",
        entry_point=f"{path}:{name}",
        topics=("test.command",),
        **fields,
    )


def script_worker(
    tmp_path: Path, body: str, worker_id: str = "scripted", **fields
) -> WorkerManifest:
    path = tmp_path / f"{worker_id}.py"
    path.write_text(textwrap.dedent(body))
    fields.setdefault("options", FAST)
    return WorkerManifest(
        id=worker_id,
        mime_type="text/x-python",
        entry_point=str(path),
        topics=("test.command",),
        output_topic="test.response",
        **fields,
    )


async def test_lifecycle_events_follow_create_start_stop_delete():
    bus = MemoryBus()
    tap = Tap(bus)
    async with Supervisor(bus) as sup:
        info = await sup.create(WorkerManifest.load(ROOT / "workers/echo/manifest.json"))
        assert info.state is WorkerState.STOPPED
        assert info.version == 1
        info = await sup.start("echo")
        assert info.state is WorkerState.RUNNING
        assert info.group == "echo"
        await bus.publish("echo.command", command({"command": "ping", "id": "1"}))
        await bus.drain()
        (reply,) = tap.by_topic["echo.response"]
        assert reply.data == {"command": "ping", "success": True, "id": "1", "message": "pong"}
        assert reply.correlationid == "corr-1"
        assert reply.source == "urn:com.virtufin.worker.echo"
        assert (await sup.stop("echo")).state is WorkerState.STOPPED
        await sup.delete("echo")
        assert sup.list_workers() == []
        with pytest.raises(WorkerError, match="no such worker"):
            sup.info("echo")
    assert tap.lifecycle() == ["registered", "starting", "online", "stopping", "stopped"]
    first = tap.by_topic[topics.WORKMANAGER_LIFECYCLE][0]
    assert first.type == "com.virtufin.workmanager.lifecycle.registered"
    assert first.source == "urn:com.virtufin.workmanager"
    assert first.data["state"] == "created"


async def test_operations_are_checked_against_the_state():
    async with Supervisor(MemoryBus()) as sup:
        await sup.create(WorkerManifest.load(ROOT / "workers/echo/manifest.json"))
        with pytest.raises(WorkerError, match="cannot stop a stopped worker"):
            await sup.stop("echo")
        await sup.start("echo")
        with pytest.raises(WorkerError, match="cannot start a running worker"):
            await sup.start("echo")
        with pytest.raises(WorkerError, match="exists"):
            await sup.create(WorkerManifest.load(ROOT / "workers/echo/manifest.json"))


@pytest.mark.parametrize(
    ("data", "reply"),
    [
        ({"command": "EcHo", "message": "hi", "id": 7},
         {"command": "echo", "success": True, "id": "7", "message": "hi"}),
        ({"command": "reboot"},
         {"command": "error", "success": False, "message": "Unknown command: reboot"}),
        ({"message": "x"},
         {"command": "error", "success": False, "message": "Missing 'command' field"}),
        ('{"command": ', {"command": "error", "success": False,
                          "message": "Failed to parse command JSON"}),
        ({"command": "echo", "message": 5},
         {"command": "echo", "success": False, "message": "message must be a string"}),
    ],
)  # fmt: skip
async def test_command_replies_go_to_the_reply_topic(data, reply):
    bus = MemoryBus()
    tap = Tap(bus)
    async with Supervisor(bus) as sup:
        await sup.create(WorkerManifest.load(ROOT / "workers/echo/manifest.json"))
        await sup.start("echo")
        await bus.publish("echo.command", command(data, replytopic="client.response"))
        await bus.drain()
    (out,) = tap.by_topic["client.response"]
    assert out.data == reply
    assert out.type == "com.virtufin.worker.command.reply"


async def run_backtest(native_build: Path, bars: list[Envelope]) -> dict[str, list[Envelope]]:
    bus = MemoryBus()
    tap = Tap(bus)
    sup = Supervisor(bus, config=SupervisorConfig(dispatch="sync"))
    await sup.create(
        WorkerManifest.load(native_build / "libsma_cross.manifest.json"), topics=(BAR_TOPIC,)
    )
    await sup.create(
        WorkerManifest.load(ROOT / "workers/risk_limit/manifest.json"),
        topics=(topics.order_event("BT_SMALL", "submitted"), BAR_TOPIC),
        params={"max_notional": 5000},
    )
    await sup.start("sma_cross_native")
    await sup.start("risk_limit")
    for bar in bars:
        bus.publish_sync(BAR_TOPIC, bar)
    assert sup.metrics("sma_cross_native").events_in == 300
    assert sup.metrics("risk_limit").events_in == 309
    await sup.close()
    return tap.by_topic


async def test_a_sync_backtest_routes_orders_through_the_risk_filter(native_build, bars):
    published = await run_backtest(native_build, bars)
    submitted = published["sc.BT_SMALL.trading.order.submitted"]
    accepted = published["sc.BT_SMALL.trading.order.accepted"]
    assert len(submitted) == 9
    assert [a.data["order_id"] for a in accepted] == [s.data["order_id"] for s in submitted]
    assert all(a.correlationid == s.correlationid for a, s in zip(accepted, submitted, strict=True))
    assert all(a.data["notional"] is None for a in accepted)  # all_in: size unknown here
    again = await run_backtest(native_build, bars)
    key = lambda envs: [(e.id, e.type, e.data, e.eventtime) for e in envs]  # noqa: E731
    assert key(again["sc.BT_SMALL.trading.order.accepted"]) == key(accepted)


async def test_a_raising_worker_dead_letters_and_degrades_then_recovers(tmp_path):
    manifest = class_worker(
        tmp_path,
        """
        class Flaky(Worker):
            def on_event(self, event):
                if event.data == "bad":
                    raise ValueError("cannot handle bad")
                if event.data == "garbage":
                    return 42
                self.ctx.emit("com.example.ok", event.data, topic="test.response")
        """,
    )
    bus = MemoryBus()
    tap = Tap(bus)
    config = SupervisorConfig(dispatch="sync", recover_after_events=2)
    async with Supervisor(bus, config=config) as sup:
        await sup.create(manifest)
        await sup.start("flaky")
        for data in ("ok1", "bad", "garbage", "ok2", "ok3", "ok4"):
            bus.publish_sync("test.command", command(data))
        assert sup.info("flaky").state is WorkerState.RUNNING
        stats = sup.metrics("flaky")
    assert [e.data for e in tap.by_topic["test.response"]] == ["ok1", "ok2", "ok3", "ok4"]
    assert [d.data for d in tap.dead] == ["bad", "garbage"]
    assert "on_event raised ValueError: cannot handle bad" in tap.dead[0].extensions["dlreason"]
    assert "on_event returned int" in tap.dead[1].extensions["dlreason"]
    assert tap.dead[0].extensions["dltopic"] == "test.command"
    assert tap.lifecycle("flaky") == [
        "registered", "starting", "online", "degraded", "online", "stopping", "stopped",
    ]  # fmt: skip
    assert tap.reasons("degraded") == ["on_event raised ValueError: cannot handle bad"]
    assert (stats.events_in, stats.errors, stats.dead_lettered) == (6, 2, 2)


async def test_a_worker_that_keeps_dying_is_marked_failed_and_unsubscribed(tmp_path):
    manifest = script_worker(
        tmp_path,
        """
        import os
        def Process(event):
            os._exit(4)
        """,
        options=FAST.model_copy(update={"max_restarts": 2, "max_attempts": 1}),
    )
    bus = MemoryBus()
    tap = Tap(bus)
    async with Supervisor(bus, config=SupervisorConfig(dispatch="sync")) as sup:
        await sup.create(manifest)
        await sup.start("scripted")
        for n in range(5):
            bus.publish_sync("test.command", command(n))
        info = sup.info("scripted")
        assert info.state is WorkerState.FAILED
        assert "restarted 2 times" in (info.last_error or "")
        assert sup.engine("scripted") is None
        assert len(tap.dead) == 4  # three crashes + the event the engine gave up on
        assert all("exited with code 4" in d.extensions["dlreason"] or "giving up" in
                   d.extensions["dlreason"] for d in tap.dead)  # fmt: skip
        bus.publish_sync("test.command", command("after"))  # nobody listens any more
        assert len(tap.dead) == 4
        await sup.start("scripted")  # a failed worker may be started again
        assert sup.info("scripted").state is WorkerState.RUNNING
    # the first crash, then one "degraded" per restart, then the engine gives up
    assert tap.lifecycle("scripted") == [
        "registered", "starting", "online", "degraded", "degraded", "degraded", "failed",
        "starting", "online", "stopping", "stopped",
    ]  # fmt: skip
    assert "giving up" in tap.reasons("failed")[0]


async def test_a_segfault_in_safe_mode_is_contained(native_manifest, make_event):
    bus = MemoryBus()
    tap = Tap(bus)
    manifest = native_manifest("probe", isolation="process").model_copy(
        update={"topics": ("test.command",), "output_topic": "test.response"}
    )
    async with Supervisor(bus) as sup:
        await sup.create(manifest)
        await sup.start("probe")
        for what in ("echo", "crash", "echo"):
            await bus.publish("test.command", make_event({"op": what}))
            await bus.drain()
        assert sup.info("probe").state is WorkerState.RUNNING
        assert sup.info("probe").restarts == 2
    assert [e.type for e in tap.by_topic["test.response"]] == ["probe.echo", "probe.echo"]
    (dead,) = tap.dead
    assert "SIGSEGV" in dead.extensions["dlreason"]
    assert "degraded" in tap.lifecycle("probe")
    assert "child restarted" in tap.reasons("degraded")[0]


async def test_bad_parameters_fail_the_start_naming_the_fields():
    bus = MemoryBus()
    tap = Tap(bus)
    async with Supervisor(bus) as sup:
        await sup.create(
            WorkerManifest.load(ROOT / "workers/sma_cross/manifest.json"),
            params={"fast": 30, "slow": 20},
        )
        with pytest.raises(WorkerParamsError, match=r"fast \(30\) must be less than slow \(20\)"):
            await sup.start("sma_cross")
        assert sup.info("sma_cross").state is WorkerState.FAILED
    assert tap.lifecycle() == ["registered", "starting", "failed"]
    assert "fast (30) must be less than slow (20)" in tap.reasons("failed")[0]


async def test_hot_reload_swaps_code_and_records_history(tmp_path):
    v1 = 'def Process(event):\n    return {"type": "t.v", "data": "v1"}\n'
    manifest = script_worker(tmp_path, v1)
    v1_digest = hashlib.sha256(v1.encode()).hexdigest()
    bus = MemoryBus()
    tap = Tap(bus)
    async with Supervisor(bus, config=SupervisorConfig(dispatch="sync")) as sup:
        await sup.create(manifest)
        await sup.start("scripted")
        bus.publish_sync("test.command", command(1))
        v2 = b'def Process(event):\n    return {"type": "t.v", "data": "v2"}\n'
        record = await sup.load_code("scripted", v2)
        bus.publish_sync("test.command", command(2))
        with pytest.raises(WorkerLoadError, match="SyntaxError"):
            await sup.load_code("scripted", b"def Process(:\n")
        bus.publish_sync("test.command", command(3))
        history = sup.history("scripted")
    assert [e.data for e in tap.by_topic["test.response"]] == ["v1", "v2", "v2"]
    assert record.version == 2
    assert record.sha256 == hashlib.sha256(v2).hexdigest()
    assert [h.version for h in history] == [1, 2]
    assert history[0].sha256 == v1_digest
    assert history[1].loaded_at >= history[0].loaded_at
    assert "reloaded code version 2" in tap.reasons("online")


async def test_hot_reload_of_a_class_worker_from_source(tmp_path):
    manifest = class_worker(
        tmp_path,
        """
        class Flaky(Worker):
            def on_event(self, event):
                self.ctx.emit("t.v", "old", topic="test.response")
        """,
    )
    bus = MemoryBus()
    tap = Tap(bus)
    async with Supervisor(bus, config=SupervisorConfig(dispatch="sync")) as sup:
        await sup.create(manifest)
        await sup.start("flaky")
        source = (
            b"from workers.kit import Worker\n"
            b"class Flaky(Worker):\n"
            b"    def on_event(self, event):\n"
            b"        self.ctx.emit('t.v', 'new', topic='test.response')\n"
        )
        await sup.load_code("flaky", source)
        bus.publish_sync("test.command", command(1))
    assert [e.data for e in tap.by_topic["test.response"]] == ["new"]


async def test_env_and_tags_respect_virtufins_limits(tmp_path):
    manifest = script_worker(
        tmp_path,
        """
        import os
        def Process(event):
            return {"type": "t.env", "data": os.environ.get("GREETING")}
        """,
    )
    bus = MemoryBus()
    tap = Tap(bus)
    async with Supervisor(bus, config=SupervisorConfig(dispatch="sync")) as sup:
        await sup.create(manifest, tags={"team": "quant"})
        sup.set_env("scripted", "GREETING", "hello")
        sup.set_tag("scripted", "k" * 128, "v")
        with pytest.raises(WorkerError, match="key must be 1-128"):
            sup.set_tag("scripted", "k" * 129, "v")
        for i in range(48):
            sup.set_tag("scripted", f"k{i}", "v")
        assert len(sup.tags("scripted")) == 50
        with pytest.raises(WorkerError, match="at most 50 tags"):
            sup.set_tag("scripted", "one-too-many", "v")
        sup.set_tag("scripted", "k0", "x" * 1024)
        with pytest.raises(WorkerError, match="at most 1024"):
            sup.set_tag("scripted", "k0", "x" * 1025)
        with pytest.raises(WorkerError, match="not valid"):
            sup.set_env("scripted", "BAD-NAME", "v")
        sup.set_tag("scripted", "team", None)
        assert "team" not in sup.tags("scripted")
        await sup.start("scripted")
        bus.publish_sync("test.command", command(1))
        assert sup.env("scripted") == {"GREETING": "hello"}
    assert tap.by_topic["test.response"][0].data == "hello"


async def test_heartbeats_report_each_running_worker():
    bus = MemoryBus()
    tap = Tap(bus)
    async with Supervisor(bus) as sup:
        await sup.create(WorkerManifest.load(ROOT / "workers/echo/manifest.json"))
        await sup.start("echo")
        await bus.publish("echo.command", command({"command": "status"}))
        await bus.drain()
        assert await sup.heartbeat() == 1
    (beat,) = tap.by_topic[topics.WORKMANAGER_INFRA_WORKER]
    assert beat.type == HEARTBEAT_TYPE == "com.virtufin.workmanager.infra.worker.heartbeat"
    assert beat.data["worker_id"] == "echo"
    assert beat.data["events_in"] == 1
    assert beat.data["events_out"] == 1
    assert beat.data["health"] == "ready"
    assert beat.data["latency_us"]["mean"] > 0


async def test_replicas_in_one_group_compete_for_events():
    bus = MemoryBus()
    tap = Tap(bus)
    replicas = [Supervisor(bus), Supervisor(bus)]
    for sup in replicas:
        await sup.create(WorkerManifest.load(ROOT / "workers/echo/manifest.json"))
        await sup.start("echo")
    for n in range(4):
        await bus.publish("echo.command", command({"command": "ping", "id": n}))
    await bus.drain()
    assert len(tap.by_topic["echo.response"]) == 4
    assert [sup.metrics("echo").events_in for sup in replicas] == [2, 2]
    for sup in replicas:
        await sup.close()


async def test_outputs_without_a_topic_are_dead_lettered(tmp_path):
    manifest = class_worker(
        tmp_path,
        """
        class Flaky(Worker):
            def on_event(self, event):
                self.ctx.emit("com.example.lost", 1)
                self.ctx.emit(EventTypes.order("submitted"), {"symbol": "X"})

        from virtufin.topics import EventTypes
        """,
    )
    bus = MemoryBus()
    tap = Tap(bus)
    async with Supervisor(bus, config=SupervisorConfig(dispatch="sync")) as sup:
        await sup.create(manifest, scenario_id="S1")
        await sup.start("flaky")
        bus.publish_sync("test.command", command(1))
    (dead,) = tap.dead
    assert dead.type == "com.example.lost"
    assert "no topic for com.example.lost" in dead.extensions["dlreason"]
    (order,) = tap.by_topic["sc.S1.trading.order.submitted"]
    assert order.scenarioid == "S1"
    assert order.type == EventTypes.order("submitted")
