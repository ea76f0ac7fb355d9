"""`Supervisor`: hosts workers on an `EventBus` — lifecycle, routing, failure handling.

The WorkManager service (and a backtest) drive it: ``create`` registers a worker (state
stopped), ``start`` loads its engine and subscribes it to its topics with its group (competing
consumers), ``stop`` unsubscribes and releases it, ``delete`` forgets it, ``load_code``
hot-reloads it and records the version. Each transition is announced on
``workmanager.lifecycle``; ``heartbeat`` publishes one heartbeat per running worker on
``workmanager.infra.worker``.

Whatever a worker does wrong stays contained: an event it fails on (raises, returns garbage,
times out, crashes its child) is dead-lettered on ``bus.deadletter`` with the reason (the bus's
``dl*`` extensions, plus ``dlid``: the original id, since the dead letter gets its own), after
the engine's own retries; the first failure announces ``degraded``, recovery ``online``; an engine
that gives up marks the worker ``failed`` (announced, unsubscribed). Events reaching a failed
worker are dead-lettered too.

Dispatch ``async`` uses `EventBus.publish`/`subscribe`; ``sync`` (for backtests on a
`MemoryBus`) uses ``publish_sync``/``subscribe_sync``, so a whole replay is deterministic.

Snapshots: given a state store (``snapshots=``, async dispatch only), a stateful worker (one
whose engine has a `Engine.state_kind`, e.g. a `Worker` overriding ``snapshot``) resumes from
its stored snapshot when it starts or is reloaded, and its snapshot is saved after each input
that changed it: after the input's outputs are published, before the input is acknowledged.
An input already in the snapshot (a redelivery after a crash) is acknowledged without being
processed again; one whose snapshot could not be saved is handed back to the bus (redelivered
up to ``max_deliveries`` times). Events of such a worker are handled one at a time, snapshot
included (`workers.kit.snapshots` has the format and the reasoning), and its subscriptions are
*ordered* (``SupervisorConfig.ordered``): the bus hands out its group's next event only once
the previous one is settled, so an input that a killed process held unacknowledged comes back
before anything newer and the worker's state sees its inputs in stream order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from virtufin import topics
from virtufin.bus.memory import MemoryBus
from virtufin.bus.port import Delivery, EventBus, Subscription, dead_letter_envelope
from virtufin.envelope import Envelope
from virtufin.errors import (
    BusError,
    ConcurrencyError,
    StateError,
    WorkerError,
    WorkerEventError,
    WorkerLoadError,
)
from virtufin.runtime.codestore import CodeVersion, code_digest, stage_code
from virtufin.runtime.constants import WORKMANAGER_SERVICE
from virtufin.runtime.engine import Engine, EngineStatus
from virtufin.runtime.factory import create_engine
from virtufin.runtime.lifecycle import (
    LifecycleEvent,
    WorkerState,
    check_env,
    check_operation,
    check_tags,
    heartbeat_envelope,
    lifecycle_envelope,
)
from virtufin.runtime.manifest import Isolation, WorkerManifest
from virtufin.runtime.metrics import MetricsSnapshot, WorkerMetrics
from virtufin.runtime.routing import Binding, ClockMode, Routed
from virtufin.state.port import StateStore
from workers.kit.snapshots import DEFAULT_REMEMBER, SnapshotKeeper, fingerprint

__all__ = ["Supervisor", "SupervisorConfig", "WorkerInfo"]

log = logging.getLogger(__name__)
_DEAD_LETTER_IDS: Final = uuid.UUID("0d9b3e3c-3b8a-4b1e-9a5e-6f0f8c1d2e47")
Publication = tuple[str, Envelope]


def _updated(mapping: Mapping[str, str], key: str, value: str | None) -> dict[str, str]:
    """A copy of `mapping` with `key` set to `value` (None: removed)."""
    out = dict(mapping)
    if value is None:
        out.pop(key, None)
    else:
        out[key] = value
    return out


class SupervisorConfig(BaseModel):
    """Usage: ``SupervisorConfig(dispatch="sync")`` for a deterministic backtest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dispatch: Literal["async", "sync"] = "async"
    heartbeat_interval_secs: float = Field(default=10.0, gt=0)
    recover_after_events: int = Field(default=10, ge=1)
    """Consecutive successes after which a degraded worker is announced online again."""
    max_deliveries: int = Field(default=5, ge=1)
    """Deliveries of one event to a worker (async dispatch) when its handling was cut short:
    the process died before acknowledging it, or its snapshot could not be saved. A worker's
    own failure on an event is dead-lettered at once, never retried by the bus."""
    snapshot_remember: int = Field(default=DEFAULT_REMEMBER, ge=1)
    """Input keys a snapshot's watermark keeps (to recognise redelivered inputs)."""
    code_dir: str | None = None
    """Where hot-reloaded code is written (default: a temporary folder, removed on close)."""
    source: str = topics.source_urn(WORKMANAGER_SERVICE)
    ordered: Literal["stateful", "always", "never"] = "stateful"
    """Which workers' subscriptions are ordered (`EventBus.subscribe`'s ``ordered``: one
    event in flight per worker group, a failed or orphaned event redelivered before anything
    newer): ``stateful``, workers that keep snapshots (their state depends on input order);
    ``always``; ``never`` (throughput first: after a crash, redeliveries may arrive after
    newer events)."""


class WorkerInfo(BaseModel):
    """A snapshot of one worker, as WorkManager's ``WorkerInfo`` (plus health)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    mime_type: str
    isolation: Isolation
    entry_point: str
    topics: tuple[str, ...]
    group: str
    state: WorkerState
    version: int
    created_at: datetime
    env: dict[str, str]
    tags: dict[str, str]
    scenario_id: str | None
    restarts: int
    last_error: str | None


@dataclass(eq=False)
class _Record:
    manifest: WorkerManifest
    params: dict[str, Any]
    topics: tuple[str, ...]
    group: str
    isolation: Isolation
    scenario_id: str | None
    run_id: str | None
    clock: ClockMode
    gateway: Callable[[str, str, bytes], bytes] | None
    env: dict[str, str]
    tags: dict[str, str]
    created_at: datetime
    state: WorkerState = WorkerState.CREATED
    history: list[CodeVersion] = field(default_factory=list)
    engine: Engine | None = None
    subscriptions: list[Subscription] = field(default_factory=list)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    last_error: str | None = None
    degraded: bool = False
    streak: int = 0
    seen_restarts: int = 0
    restarts: int = 0
    keeper: SnapshotKeeper | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Supervisor:
    """Runs workers on `bus`.

    Args:
        bus: where workers consume and publish, and where lifecycle events go.
        config: dispatch mode, heartbeat interval, code folder, event source.
        snapshots: where stateful workers keep their snapshots (None: nowhere, their state
            lives and dies with their engine, as in a backtest).

    Raises:
        WorkerError: sync dispatch on another bus than `MemoryBus`, or with `snapshots`.

    Example::

        sup = Supervisor(MemoryBus())
        info = await sup.create(WorkerManifest.load("workers/echo/manifest.json"))
        await sup.start(info.id)
    """

    def __init__(
        self,
        bus: EventBus,
        *,
        config: SupervisorConfig | None = None,
        snapshots: StateStore | None = None,
    ) -> None:
        self.bus = bus
        self.config = config if config is not None else SupervisorConfig()
        self._sync = self.config.dispatch == "sync"
        if self._sync and not isinstance(bus, MemoryBus):
            raise WorkerError("", "sync dispatch needs a MemoryBus")
        if self._sync and snapshots is not None:
            raise WorkerError("", "snapshots need async dispatch (the state port is async)")
        self._snapshots = snapshots
        self._workers: dict[str, _Record] = {}
        self._code_dir: Path | None = Path(self.config.code_dir) if self.config.code_dir else None
        self._own_code_dir = False
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ helpers

    def _get(self, worker_id: str) -> _Record:
        rec = self._workers.get(worker_id)
        if rec is None:
            raise WorkerError(worker_id, "no such worker")
        return rec

    def _lifecycle(
        self, rec: _Record, event: LifecycleEvent, reason: str | None = None
    ) -> Publication:
        data: dict[str, Any] = {
            "state": rec.state.value,
            "mime_type": rec.manifest.mime_type,
            "version": len(rec.history),
        }
        if reason is not None:
            data["reason"] = reason
        envelope = lifecycle_envelope(
            event, source=self.config.source, worker_id=rec.manifest.id, data=data
        )
        return topics.WORKMANAGER_LIFECYCLE, envelope

    def _publish_sync(self, publications: list[Publication]) -> None:
        assert isinstance(self.bus, MemoryBus)
        for topic, envelope in publications:
            try:
                self.bus.publish_sync(topic, envelope)
            except BusError as exc:
                log.warning("could not publish %s to %s: %s", envelope.type, topic, exc)

    async def _publish(self, publications: list[Publication]) -> None:
        if self._sync:
            self._publish_sync(publications)
            return
        for topic, envelope in publications:
            try:
                await self.bus.publish(topic, envelope)
            except BusError as exc:
                log.warning("could not publish %s to %s: %s", envelope.type, topic, exc)

    def info(self, worker_id: str) -> WorkerInfo:
        """A snapshot of one worker."""
        rec = self._get(worker_id)
        return WorkerInfo(
            id=rec.manifest.id,
            mime_type=rec.manifest.mime_type,
            isolation=rec.isolation,
            entry_point=rec.manifest.entry_point,
            topics=rec.topics,
            group=rec.group,
            state=rec.state,
            version=len(rec.history),
            created_at=rec.created_at,
            env=dict(rec.env),
            tags=dict(rec.tags),
            scenario_id=rec.scenario_id,
            restarts=rec.restarts + (rec.engine.health().restarts if rec.engine else 0),
            last_error=rec.last_error,
        )

    def list_workers(self) -> list[WorkerInfo]:
        """Every worker not deleted, in creation order."""
        return [self.info(worker_id) for worker_id in self._workers]

    def history(self, worker_id: str) -> list[CodeVersion]:
        """The worker's code versions, oldest first."""
        return list(self._get(worker_id).history)

    def metrics(self, worker_id: str) -> MetricsSnapshot:
        """Events in/out, errors, dead-lettered and latency of one worker (across reloads)."""
        return self._get(worker_id).metrics.snapshot()

    def engine(self, worker_id: str) -> Engine | None:
        """The running engine of a worker (None when it is not running)."""
        return self._get(worker_id).engine

    # ------------------------------------------------------------------ env and tags

    def set_env(self, worker_id: str, key: str, value: str | None) -> None:
        """Set (None: remove) an environment variable; applies at the next start or reload."""
        rec = self._get(worker_id)
        env = _updated(rec.env, key, value)
        check_env(worker_id, env)
        rec.env = env

    def env(self, worker_id: str) -> dict[str, str]:
        return dict(self._get(worker_id).env)

    def set_tag(self, worker_id: str, key: str, value: str | None) -> None:
        """Set (None: remove) a tag (at most 50; key ≤ 128, value ≤ 1024 characters)."""
        rec = self._get(worker_id)
        tags = _updated(rec.tags, key, value)
        check_tags(worker_id, tags)
        rec.tags = tags

    def tags(self, worker_id: str) -> dict[str, str]:
        return dict(self._get(worker_id).tags)

    # ------------------------------------------------------------------ lifecycle

    async def create(
        self,
        manifest: WorkerManifest,
        *,
        params: Mapping[str, Any] | None = None,
        topics: tuple[str, ...] | None = None,
        group: str | None = None,
        isolation: Isolation | None = None,
        env: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        scenario_id: str | None = None,
        run_id: str | None = None,
        clock: ClockMode = "auto",
        gateway: Callable[[str, str, bytes], bytes] | None = None,
    ) -> WorkerInfo:
        """Register a worker (state ``stopped``; announces ``registered``).

        Args:
            manifest: what to run; `topics`, `group`, `isolation` override its fields.
            params: parameter overrides (validated at start).
            env: environment variables; tags: tags (Virtufin's limits apply).
            scenario_id, run_id: used when an input event carries none.
            clock: ``auto`` (follow each input's clocktype), ``wall`` or ``historical``.
            gateway: answers native workers' ``gateway_call``.

        Raises:
            WorkerError: the id is taken, or env/tags break the limits.
        """
        worker_id = manifest.id
        if worker_id in self._workers:
            raise WorkerError(worker_id, "a worker with this id exists")
        merged_tags = {**manifest.tags, **(tags or {})}
        check_tags(worker_id, merged_tags)
        check_env(worker_id, dict(env or {}))
        rec = _Record(
            manifest=manifest,
            params=dict(params or {}),
            topics=tuple(topics if topics is not None else manifest.topics),
            group=group or manifest.group or worker_id,
            isolation=isolation or manifest.resolved_isolation,
            scenario_id=scenario_id,
            run_id=run_id,
            clock=clock,
            gateway=gateway,
            env=dict(env or {}),
            tags=merged_tags,
            created_at=datetime.now(UTC),
        )
        rec.history.append(
            CodeVersion(
                version=1,
                loaded_at=rec.created_at,
                sha256=code_digest(manifest),
                entry_point=manifest.entry_point,
            )
        )
        self._workers[worker_id] = rec
        await self._publish([self._lifecycle(rec, LifecycleEvent.REGISTERED)])
        rec.state = WorkerState.STOPPED
        return self.info(worker_id)

    def _new_engine(self, rec: _Record, manifest: WorkerManifest) -> Engine:
        binding = Binding(
            scenario_id=rec.scenario_id,
            run_id=rec.run_id,
            clock=rec.clock,
            env=dict(rec.env),
            gateway=rec.gateway,
        )
        engine = create_engine(
            manifest, params=rec.params, binding=binding, isolation=rec.isolation
        )
        engine.metrics = rec.metrics
        return engine

    async def _load(self, engine: Engine) -> None:
        if self._sync:
            engine.load()
        else:
            await asyncio.to_thread(engine.load)

    async def start(self, worker_id: str) -> WorkerInfo:
        """Load the engine and subscribe it (announces ``starting``, then ``online`` or ``failed``).

        Raises:
            WorkerError: not startable in its state.
            WorkerLoadError: the code, library or parameters are unusable (worker ``failed``).
        """
        rec = self._get(worker_id)
        check_operation(worker_id, rec.state, "start")
        await self._publish([self._lifecycle(rec, LifecycleEvent.STARTING)])
        engine = self._new_engine(rec, rec.manifest)
        try:
            await self._load(engine)
            keeper = await self._resume(engine)
        except WorkerLoadError as exc:
            engine.stop()
            rec.state = WorkerState.FAILED
            rec.last_error = exc.reason
            await self._publish([self._lifecycle(rec, LifecycleEvent.FAILED, exc.reason)])
            raise
        rec.engine = engine
        rec.keeper = keeper
        rec.degraded = False
        rec.streak = 0
        rec.seen_restarts = 0
        rec.last_error = None
        for pattern in rec.topics:
            rec.subscriptions.append(await self._subscribe(rec, pattern))
        rec.state = WorkerState.RUNNING
        await self._publish([self._lifecycle(rec, LifecycleEvent.ONLINE)])
        return self.info(worker_id)

    async def _resume(self, engine: Engine) -> SnapshotKeeper | None:
        """The keeper of `engine`'s snapshots, the stored one restored into it (None: the
        worker keeps none, or there is no store).

        Raises:
            WorkerLoadError: the snapshot could not be read or the worker refused it.
        """
        store = self._snapshots
        kind = engine.state_kind() if store is not None else None
        if store is None or kind is None:
            return None
        keeper = SnapshotKeeper(
            store,
            engine.worker_id,
            fingerprint=fingerprint(kind, engine.params),
            remember=self.config.snapshot_remember,
            logger=engine.logger,
        )
        try:
            restored = await keeper.load()
        except StateError as exc:
            raise WorkerLoadError(engine.worker_id, f"cannot read its snapshot: {exc}") from None
        if restored is not None and restored.state is not None:
            if engine.blocking:
                await asyncio.to_thread(engine.restore, restored.state)
            else:
                engine.restore(restored.state)
            log.info(
                "worker %s resumed from its snapshot (%d changes, saved %s)",
                engine.worker_id,
                restored.changes,
                restored.saved_at,
            )
        return keeper

    async def _subscribe(self, rec: _Record, pattern: str) -> Subscription:
        if self._sync:
            assert isinstance(self.bus, MemoryBus)

            def on_event(envelope: Envelope, delivery: Delivery) -> None:
                self._publish_sync(self._handle_sync(rec, envelope, delivery))

            return self.bus.subscribe_sync(pattern, on_event, group=rec.group, max_deliveries=1)

        async def on_event_async(envelope: Envelope, delivery: Delivery) -> None:
            if rec.keeper is None:
                await self._publish(await self._handle_async(rec, envelope, delivery))
            else:
                await self._handle_kept(rec, envelope, delivery)

        mode = self.config.ordered
        ordered = mode == "always" or (mode == "stateful" and rec.keeper is not None)
        return await self.bus.subscribe(
            pattern,
            on_event_async,
            group=rec.group,
            max_deliveries=self.config.max_deliveries,
            ordered=ordered,
        )

    async def _teardown(self, rec: _Record) -> None:
        subscriptions, rec.subscriptions = rec.subscriptions, []
        for sub in subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        async with rec.lock:  # let an event being handled finish, snapshot included
            engine, rec.engine = rec.engine, None
            rec.keeper = None
        if engine is not None:
            rec.restarts += engine.health().restarts
            if self._sync or not engine.blocking:
                engine.stop()
            else:
                await asyncio.to_thread(engine.stop)

    async def stop(self, worker_id: str) -> WorkerInfo:
        """Unsubscribe and release the worker (announces ``stopping``, then ``stopped``)."""
        rec = self._get(worker_id)
        check_operation(worker_id, rec.state, "stop")
        await self._publish([self._lifecycle(rec, LifecycleEvent.STOPPING)])
        await self._teardown(rec)
        rec.state = WorkerState.STOPPED
        await self._publish([self._lifecycle(rec, LifecycleEvent.STOPPED)])
        return self.info(worker_id)

    async def delete(self, worker_id: str) -> None:
        """Forget the worker, stopping it first if it runs."""
        rec = self._get(worker_id)
        if rec.state is WorkerState.RUNNING:
            await self.stop(worker_id)
        check_operation(worker_id, rec.state, "delete")
        await self._teardown(rec)
        rec.state = WorkerState.DELETED
        del self._workers[worker_id]

    def _code_folder(self) -> Path:
        if self._code_dir is None:
            self._code_dir = Path(tempfile.mkdtemp(prefix="virtufin-code-"))
            self._own_code_dir = True
        return self._code_dir

    async def load_code(
        self, worker_id: str, code: bytes | None = None, *, entry_point: str | None = None
    ) -> CodeVersion:
        """Hot-reload the worker's code and record the new version.

        A running worker gets a new engine (fresh state, or the stored snapshot when snapshots
        are kept) that must load before it replaces the old one; if it does not, the old one
        keeps running and `WorkerLoadError` is raised.

        Args:
            code: the new script, library or class module source (None: re-read the entry).
            entry_point: a new entry point (for classes, ``module:Class`` or the class name).
        """
        rec = self._get(worker_id)
        check_operation(worker_id, rec.state, "load_code")
        version = len(rec.history) + 1
        manifest = stage_code(
            rec.manifest,
            code=code,
            entry_point=entry_point,
            code_dir=self._code_folder(),
            version=version,
        )
        if rec.state is WorkerState.RUNNING and rec.engine is not None:
            engine = self._new_engine(rec, manifest)
            try:
                await self._load(engine)
                async with rec.lock:  # between two events: resume from the latest snapshot
                    rec.keeper = await self._resume(engine)
                    old, rec.engine = rec.engine, engine
            except WorkerLoadError:
                engine.stop()
                raise
            if old is not None:
                rec.restarts += old.health().restarts
                if self._sync or not old.blocking:
                    old.stop()
                else:
                    await asyncio.to_thread(old.stop)
        rec.manifest = manifest
        record = CodeVersion(
            version=version,
            loaded_at=datetime.now(UTC),
            sha256=code_digest(manifest),
            entry_point=manifest.entry_point,
        )
        rec.history.append(record)
        if rec.state is WorkerState.RUNNING:
            reason = f"reloaded code version {version}"
            await self._publish([self._lifecycle(rec, LifecycleEvent.ONLINE, reason)])
        return record

    # ------------------------------------------------------------------ events

    def _dead_letter(
        self, rec: _Record, envelope: Envelope, delivery: Delivery, reason: str, attempts: int
    ) -> Publication:
        rec.metrics.dead_lettered += 1
        dead = dead_letter_envelope(
            envelope,
            topic=delivery.topic,
            reason=f"worker {rec.manifest.id}: {reason}",
            attempts=attempts,
            group=delivery.group,
        )
        # A fresh id, or the bus would de-duplicate it against the original (same source/id).
        extensions = {**dead.extensions, "dlid": envelope.id}
        fresh = uuid.uuid5(_DEAD_LETTER_IDS, f"{rec.manifest.id}|{envelope.source}|{envelope.id}")
        return topics.DEAD_LETTER, dead.with_changes(id=str(fresh), extensions=extensions)

    def _refused(self, rec: _Record, envelope: Envelope, delivery: Delivery) -> list[Publication]:
        reason = f"worker is {rec.state.value}" + (f": {rec.last_error}" if rec.last_error else "")
        return [self._dead_letter(rec, envelope, delivery, reason, 0)]

    def _outcome(
        self,
        rec: _Record,
        engine: Engine,
        envelope: Envelope,
        delivery: Delivery,
        outputs: list[Routed] | None,
        error: WorkerError | None,
    ) -> list[Publication]:
        pubs: list[Publication] = []
        if error is None:
            assert outputs is not None
            for topic, out in outputs:
                if topic is None:
                    reason = f"no topic for {out.type} (no replytopic or output topic)"
                    pubs.append(self._dead_letter(rec, out, delivery, reason, 1))
                else:
                    pubs.append((topic, out))
            rec.streak += 1
        elif isinstance(error, WorkerEventError):
            pubs.append(self._dead_letter(rec, envelope, delivery, error.reason, error.attempts))
            rec.last_error = error.reason
            rec.streak = 0
        else:
            pubs.append(self._dead_letter(rec, envelope, delivery, error.reason, 1))
            return pubs + self._fail(rec, error.reason)
        health = engine.health()
        if health.status is EngineStatus.FAILED:
            return pubs + self._fail(rec, health.last_error or "engine failed")
        if health.restarts > rec.seen_restarts:
            rec.seen_restarts = health.restarts
            rec.degraded = True
            rec.streak = 0
            why = f"child restarted ({health.restarts} so far): {health.last_error}"
            pubs.append(self._lifecycle(rec, LifecycleEvent.DEGRADED, why))
        elif isinstance(error, WorkerEventError) and not rec.degraded:
            rec.degraded = True
            pubs.append(self._lifecycle(rec, LifecycleEvent.DEGRADED, error.reason))
        elif rec.degraded and rec.streak >= self.config.recover_after_events:
            rec.degraded = False
            pubs.append(self._lifecycle(rec, LifecycleEvent.ONLINE, "recovered"))
        return pubs

    def _fail(self, rec: _Record, reason: str) -> list[Publication]:
        """Mark failed; unsubscribe and release the engine out of band."""
        if rec.state is not WorkerState.RUNNING:
            return []
        rec.state = WorkerState.FAILED
        rec.last_error = reason
        if self._sync:
            for sub in rec.subscriptions:
                sub.unsubscribe_sync()  # type: ignore[attr-defined]
            rec.subscriptions = []
            engine, rec.engine = rec.engine, None
            if engine is not None:
                rec.restarts += engine.health().restarts
                engine.stop()
        else:
            task = asyncio.get_running_loop().create_task(self._teardown(rec))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return [self._lifecycle(rec, LifecycleEvent.FAILED, reason)]

    def _handle_sync(
        self, rec: _Record, envelope: Envelope, delivery: Delivery
    ) -> list[Publication]:
        engine = rec.engine
        if engine is None or rec.state is not WorkerState.RUNNING:
            return self._refused(rec, envelope, delivery)
        try:
            outputs = engine.process_routed(envelope)
        except WorkerError as exc:
            return self._outcome(rec, engine, envelope, delivery, None, exc)
        return self._outcome(rec, engine, envelope, delivery, outputs, None)

    async def _handle_kept(self, rec: _Record, envelope: Envelope, delivery: Delivery) -> None:
        """Handle one event of a worker that keeps snapshots (see the module docstring).

        Raises:
            StateError: the snapshot could not be saved: the bus redelivers the event.
        """
        async with rec.lock:
            keeper, engine = rec.keeper, rec.engine
            if keeper is not None and keeper.applied(envelope):
                await keeper.flush()  # a redelivery: the input is in the state already
                return
            await self._publish(await self._handle_async(rec, envelope, delivery))
            if (
                keeper is not None
                and engine is not None
                and rec.engine is engine
                and rec.state is WorkerState.RUNNING
            ):
                await self._save_snapshot(rec, keeper, engine, envelope)

    async def _save_snapshot(
        self, rec: _Record, keeper: SnapshotKeeper, engine: Engine, envelope: Envelope
    ) -> None:
        worker_id = rec.manifest.id
        try:
            if engine.blocking:
                state = await asyncio.to_thread(engine.snapshot)
            else:
                state = engine.snapshot()
            await keeper.record(envelope, state)
        except WorkerEventError as exc:
            # Not taken this time (a child that just died): the next child gets the previous
            # state, and the bus hands the input back to be processed again.
            log.warning(
                "no snapshot of %s (%s); %s will be redelivered", worker_id, exc, envelope.id
            )
            raise
        except WorkerError as exc:
            await self._publish(self._fail(rec, f"its snapshot failed: {exc.reason}"))
        except ConcurrencyError:
            # Another instance of this worker wrote the snapshot: continue from its state,
            # and let the bus redeliver this input (skipped if that state includes it).
            log.warning("snapshot of %s was written by another instance; reloading it", worker_id)
            restored = await keeper.load()
            if restored is None:
                await keeper.record(envelope, state)  # not ours to resume: replace it
                return
            if restored.state is not None:
                try:
                    if engine.blocking:
                        await asyncio.to_thread(engine.restore, restored.state)
                    else:
                        engine.restore(restored.state)
                except WorkerError as exc:
                    await self._publish(self._fail(rec, exc.reason))
                    return
            raise
        except Exception as exc:
            log.warning(
                "snapshot of %s not saved (%s: %s); %s will be redelivered",
                worker_id,
                type(exc).__name__,
                exc,
                envelope.id,
            )
            raise

    async def _handle_async(
        self, rec: _Record, envelope: Envelope, delivery: Delivery
    ) -> list[Publication]:
        engine = rec.engine
        if engine is None or rec.state is not WorkerState.RUNNING:
            return self._refused(rec, envelope, delivery)
        try:
            outputs = await engine.aprocess_routed(envelope)
        except WorkerError as exc:
            return self._outcome(rec, engine, envelope, delivery, None, exc)
        return self._outcome(rec, engine, envelope, delivery, outputs, None)

    # ------------------------------------------------------------------ heartbeats

    async def heartbeat(self) -> int:
        """Publish one heartbeat per running worker (and notice restarts or failures that
        happened between events, e.g. a child that stopped answering pings); return the count."""
        pubs: list[Publication] = []
        count = 0
        for rec in list(self._workers.values()):
            engine = rec.engine
            if rec.state is not WorkerState.RUNNING or engine is None:
                continue
            health = engine.health()
            if health.status is EngineStatus.FAILED:
                pubs += self._fail(rec, health.last_error or "engine failed")
                continue
            if health.restarts > rec.seen_restarts:
                rec.seen_restarts = health.restarts
                rec.degraded = True
                why = f"child restarted ({health.restarts} so far): {health.last_error}"
                pubs.append(self._lifecycle(rec, LifecycleEvent.DEGRADED, why))
            data = {
                "state": rec.state.value,
                "health": "degraded" if rec.degraded else health.status.value,
                "version": len(rec.history),
                "restarts": rec.restarts + health.restarts,
                **rec.metrics.snapshot().to_dict(),
            }
            data.pop("histogram", None)
            envelope = heartbeat_envelope(
                source=self.config.source, worker_id=rec.manifest.id, data=data
            )
            pubs.append((topics.WORKMANAGER_INFRA_WORKER, envelope))
            count += 1
        await self._publish(pubs)
        return count

    async def run_heartbeats(self) -> None:
        """Publish heartbeats every ``heartbeat_interval_secs`` until cancelled."""
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_secs)
            await self.heartbeat()

    async def close(self) -> None:
        """Stop every running worker; remove the temporary code folder."""
        for rec in list(self._workers.values()):
            if rec.state is WorkerState.RUNNING:
                await self.stop(rec.manifest.id)
            elif rec.engine is not None:
                await self._teardown(rec)
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._own_code_dir and self._code_dir is not None:
            shutil.rmtree(self._code_dir, ignore_errors=True)
            self._code_dir = None
            self._own_code_dir = False

    async def __aenter__(self) -> Supervisor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
