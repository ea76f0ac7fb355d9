"""A worker restarted mid-stream (new supervisor, new bus, same state store) decides exactly as
an uninterrupted one: it resumes from its snapshot, skips inputs already in it, and re-emits
the very same orders (same envelope ids, same order ids) for inputs it must process again.
The same holds for the ``text/x-python`` twin, whose child may also be killed on its own."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from virtufin import statekeys, topics
from virtufin.bus.memory import MemoryBus
from virtufin.envelope import Envelope
from virtufin.errors import StateError, WorkerError
from virtufin.runtime.lifecycle import WorkerState
from virtufin.runtime.manifest import WorkerManifest
from virtufin.runtime.supervisor import Supervisor, SupervisorConfig
from virtufin.state.memory import MemoryStateStore
from virtufin.state.port import StateStore
from virtufin.state.sqlite import SqliteStateStore

ROOT = Path(__file__).resolve().parents[3]
BAR_TOPIC = topics.bar("binance", "BTCUSDT", interval="1d", selector="SMALL")
ORDERS = "sc.BT_SMALL.trading.order.submitted"
MANIFESTS = {
    "class": ROOT / "workers/sma_cross/manifest.json",
    "script": ROOT / "workers/sma_cross/script.manifest.json",
}
WORKER = "sma-restart"
PARAMS = {"fast": 10, "slow": 20}
Order = tuple[str, str, Any, str | None]


def order_key(envelope: Envelope) -> Order:
    """Everything that must match between runs: envelope id, event time, data, subject."""
    return (envelope.id, str(envelope.eventtime), envelope.data, envelope.subject)


class Instance:
    """One WorkManager process' worth: a bus, a supervisor with the snapshot store, the
    sma_cross worker, and the orders it published."""

    def __init__(
        self, store: StateStore | None, *, params: dict[str, Any] | None = None, kind="class"
    ) -> None:
        self.bus = MemoryBus()
        self.supervisor = Supervisor(self.bus, snapshots=store)
        self.orders: list[Envelope] = []
        self.params = PARAMS if params is None else params
        self.manifest = WorkerManifest.load(MANIFESTS[kind])

    async def start(self) -> Instance:
        async def tap(envelope: Envelope, delivery: Any) -> None:
            self.orders.append(envelope)

        await self.bus.subscribe(ORDERS, tap)
        await self.supervisor.create(
            self.manifest.model_copy(update={"id": WORKER}),
            params=self.params,
            topics=(BAR_TOPIC,),
        )
        await self.supervisor.start(WORKER)
        return self

    async def feed(self, bars: list[Envelope]) -> None:
        for bar in bars:
            await self.bus.publish(BAR_TOPIC, bar)
        await self.bus.drain()

    async def crash(self) -> None:
        """Gone without a goodbye: nothing reaches it any more, nothing is flushed."""
        await self.bus.close()
        engine = self.supervisor.engine(WORKER)
        if engine is not None and engine.blocking:
            engine.stop()  # a dead WorkManager's children die with it


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    made: StateStore = (
        MemoryStateStore() if request.param == "memory" else SqliteStateStore(tmp_path / "s.db")
    )
    yield made
    await made.close()


async def uninterrupted(bars: list[Envelope]) -> list[Order]:
    run = await Instance(None).start()
    await run.feed(bars)
    await run.supervisor.close()
    return [order_key(o) for o in run.orders]


@pytest.mark.parametrize("kind", ["class", "script"])
@pytest.mark.parametrize("cut", [110, 175, 250])
async def test_a_restarted_worker_decides_like_an_uninterrupted_one(bars, store, cut, kind):
    expected = await uninterrupted(bars)
    assert len(expected) == 9

    first = await Instance(store, kind=kind).start()
    await first.feed(bars[:cut])
    await first.crash()
    saved = await store.get(statekeys.worker_snapshot(WORKER))
    assert saved is not None
    assert len(saved.value["state"]["symbols"]["BTCUSDT"]["closes"]) == 20
    assert saved.value["applied"][-1] == f"{bars[cut - 1].source}|{bars[cut - 1].id}"

    second = await Instance(store, kind=kind).start()
    await second.feed(bars[cut:])
    await second.supervisor.close()
    assert [order_key(o) for o in first.orders + second.orders] == expected
    # Each cut falls less than `slow` bars before an order: a worker that lost its window
    # would miss it (and a counter-based order id would have started from 1 again).
    assert first.orders
    assert second.orders


async def test_a_killed_script_child_is_restarted_with_its_state(bars):
    expected = await uninterrupted(bars)
    run = await Instance(MemoryStateStore(), kind="script").start()
    await run.feed(bars[:110])
    engine = run.supervisor.engine(WORKER)
    assert engine is not None
    pid = engine.health().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await run.feed(bars[110:])
    assert engine.health().restarts == 1
    await run.supervisor.close()
    assert [order_key(o) for o in run.orders] == expected


async def test_inputs_redelivered_after_a_crash_are_skipped_not_applied_twice(bars, store):
    """The broker redelivers what was not acknowledged; those in the snapshot are skipped."""
    expected = await uninterrupted(bars)
    first = await Instance(store).start()
    await first.feed(bars[:120])
    await first.crash()
    second = await Instance(store).start()
    await second.feed(bars[110:])  # ten bars the first instance had already handled
    await second.supervisor.close()
    assert [order_key(o) for o in first.orders + second.orders] == expected
    assert second.supervisor.metrics(WORKER).events_in == len(bars) - 120


class CrashOnSave(MemoryStateStore):
    """A store whose process 'dies' while saving the snapshot of one chosen input: the save
    raises, and the instance is abandoned right after."""

    def __init__(self) -> None:
        super().__init__()
        self.crash_at: Callable[[Any], bool] = lambda value: False

    async def save(self, key: str, value: Any, **kwargs: Any) -> str:
        if key == statekeys.worker_snapshot(WORKER) and self.crash_at(value):
            raise StateError(key, "connection lost")
        return await super().save(key, value, **kwargs)


async def test_an_input_processed_but_not_snapshotted_re_emits_the_same_order(bars):
    """Crash after an order went out but before the state was saved: the restarted worker
    processes that bar again and emits the identical order (the venue drops the repeat)."""
    expected = await uninterrupted(bars)
    deciding = next(i for i, bar in enumerate(bars) if order_key_time(bar, expected))
    store = CrashOnSave()
    store.crash_at = lambda value: value["applied"][-1].endswith(f"|{bars[deciding].id}")
    first = await Instance(store).start()
    await first.feed(bars[: deciding + 1])
    await first.crash()
    assert [o.id for o in first.orders][-1] == expected[0][0]

    store.crash_at = lambda value: False
    second = await Instance(store).start()
    await second.feed(bars[deciding:])  # the unacknowledged bar comes again
    await second.supervisor.close()
    assert order_key(second.orders[0]) == order_key(first.orders[-1])  # the same order again
    assert [order_key(o) for o in second.orders] == expected


def order_key_time(bar: Envelope, expected: list[Order]) -> bool:
    return str(bar.eventtime) == expected[0][1]


async def test_a_failed_save_hands_the_input_back_and_is_retried(bars):
    """A store hiccup: the bus redelivers the input, which is not applied twice."""
    expected = await uninterrupted(bars)
    store = CrashOnSave()
    failures = iter([True, True])  # two saves fail, then the store is back
    store.crash_at = lambda value: value["changes"] == 40 and next(failures, False)
    run = await Instance(store).start()
    await run.feed(bars)
    await run.supervisor.close()
    assert [order_key(o) for o in run.orders] == expected
    saved = await store.get(statekeys.worker_snapshot(WORKER))
    assert saved is not None
    assert saved.value["changes"] == len(bars)
    assert run.supervisor.info(WORKER).state is WorkerState.STOPPED


async def test_a_snapshot_taken_with_other_parameters_is_not_restored(bars, caplog):
    store = MemoryStateStore()
    first = await Instance(store).start()
    await first.feed(bars[:100])
    await first.crash()
    other = await Instance(store, params={"fast": 5, "slow": 12}).start()
    assert "the worker starts afresh" in caplog.text
    engine = other.supervisor.engine(WORKER)
    assert engine is not None
    assert engine.snapshot() == {"symbols": {}}
    await other.feed(bars[100:101])
    await other.supervisor.close()
    saved = await store.get(statekeys.worker_snapshot(WORKER))
    assert saved is not None
    window = saved.value["state"]["symbols"]["BTCUSDT"]
    assert window == {"closes": [bars[100].data["close"]], "previous": None}


async def test_a_hot_reload_keeps_the_state(bars):
    expected = await uninterrupted(bars)
    run = await Instance(MemoryStateStore()).start()
    await run.feed(bars[:150])
    before = run.supervisor.engine(WORKER)
    source = (ROOT / "workers/sma_cross/worker.py").read_bytes()
    await run.supervisor.load_code(WORKER, source)  # a new module, the same class and state
    assert run.supervisor.engine(WORKER) is not before
    await run.feed(bars[150:])
    await run.supervisor.close()
    assert [order_key(o) for o in run.orders] == expected


async def test_a_worker_without_snapshot_hooks_writes_nothing():
    store = MemoryStateStore()
    bus = MemoryBus()
    async with Supervisor(bus, snapshots=store) as sup:
        await sup.create(WorkerManifest.load(ROOT / "workers/echo/manifest.json"))
        await sup.start("echo")
        await bus.publish(
            "echo.command", Envelope.new(type="t", source="s", data={"command": "ping"})
        )
        await bus.drain()
        assert sup.metrics("echo").events_in == 1
    assert await store.keys() == []


def test_sync_dispatch_refuses_snapshots():
    with pytest.raises(WorkerError, match="snapshots need async dispatch"):
        Supervisor(
            MemoryBus(), config=SupervisorConfig(dispatch="sync"), snapshots=MemoryStateStore()
        )


class _RecordingBus(MemoryBus):
    """A MemoryBus that remembers which patterns were subscribed ordered."""

    def __init__(self) -> None:
        super().__init__()
        self.ordered: dict[str, bool] = {}

    async def subscribe(self, pattern, handler, *, group=None, max_deliveries=5, ordered=False):
        self.ordered[pattern] = ordered
        return await super().subscribe(
            pattern, handler, group=group, max_deliveries=max_deliveries, ordered=ordered
        )


@pytest.mark.parametrize(
    ("mode", "stateful", "stateless"),
    [("stateful", True, False), ("always", True, True), ("never", False, False)],
)
async def test_stateful_workers_subscribe_ordered(mode, stateful, stateless):
    """Order-sensitive (snapshot-keeping) workers get ordered subscriptions by default, so a
    redelivery after a crash reaches them before anything newer (`SupervisorConfig.ordered`)."""
    bus = _RecordingBus()
    async with Supervisor(
        bus, config=SupervisorConfig(ordered=mode), snapshots=MemoryStateStore()
    ) as sup:
        await sup.create(
            WorkerManifest.load(MANIFESTS["class"]).model_copy(update={"id": WORKER}),
            params=PARAMS,
            topics=(BAR_TOPIC,),
        )
        await sup.start(WORKER)
        await sup.create(WorkerManifest.load(ROOT / "workers/echo/manifest.json"))
        await sup.start("echo")
    assert bus.ordered[BAR_TOPIC] is stateful
    assert bus.ordered["echo.command"] is stateless
