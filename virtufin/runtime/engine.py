"""The engine interface every worker host implements, whatever the worker is written in.

An engine owns one loaded worker: `load` validates parameters and loads the code, `process`
turns one input `Envelope` into stamped output envelopes, `stop` releases everything, `health`
reports on it. Failures on one event raise `WorkerEventError` (the host dead-letters the event);
`WorkerError` from `process` means the engine itself gave up (the worker is failed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from virtufin.envelope import Envelope
from virtufin.errors import WorkerError, WorkerEventError, WorkerLoadError
from virtufin.runtime.manifest import Isolation, WorkerManifest
from virtufin.runtime.metrics import WorkerMetrics
from virtufin.runtime.routing import Binding, Routed, Stamper, UnroutableError
from workers.kit.clock import Clock
from workers.kit.context import Emission
from workers.kit.params import validate_params

__all__ = ["Engine", "EngineHealth", "EngineStatus", "EventOutcome", "RunResult"]

RunResult = Sequence[Emission] | WorkerEventError


class EngineStatus(StrEnum):
    """Where an engine is in its life."""

    CREATED = "created"
    READY = "ready"
    DEGRADED = "degraded"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class EngineHealth:
    """What `Engine.health` reports; `restarts` counts child restarts since load."""

    status: EngineStatus
    restarts: int = 0
    last_error: str | None = None
    pid: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """The result of one event of a batch: its outputs, or the error it failed with."""

    event: Envelope
    outputs: list[Routed]
    error: WorkerEventError | None = None


class Engine:
    """Base class of engines.

    | method      | required | notes                                                        |
    |-------------|----------|--------------------------------------------------------------|
    | _load       | yes      | load the code; raise `WorkerLoadError` with a clear reason   |
    | _run        | yes      | one event → emissions; raise `WorkerEventError` on failure   |
    | _run_batch  | no       | many events at once; default calls `_run` for each           |
    | _stop       | no       | release the child, library or instance                       |
    | _health     | no       | extra health fields (restarts, pid, …)                       |
    | blocking    | no       | True: `aprocess` runs `process` in a thread                  |
    | state_kind  | no       | what the worker's snapshots are; None (default): it has none |
    | snapshot    | with it  | the worker's state as a JSON value                           |
    | restore     | with it  | give a snapshot back to a freshly loaded worker              |

    Args:
        manifest: the worker's manifest.
        params: parameter overrides, merged over the manifest's `params`.
        binding: scenario/run fallbacks, clock mode, env, gateway.
    """

    mime_type: ClassVar[str] = ""
    isolation: ClassVar[Isolation] = "in_process"
    blocking: bool = False
    """True: async hosts call `process` in a worker thread (a subclass or an instance sets it)."""

    def __init__(
        self,
        manifest: WorkerManifest,
        *,
        params: Mapping[str, Any] | None = None,
        binding: Binding | None = None,
    ) -> None:
        self.manifest = manifest
        self.worker_id = manifest.id
        self.binding = binding if binding is not None else Binding()
        self.stamper = Stamper(
            manifest.id, binding=self.binding, output_topic=manifest.output_topic
        )
        self.metrics = WorkerMetrics()
        self.logger = logging.getLogger(f"virtufin.worker.{manifest.id}")
        self.params: dict[str, Any] = {}
        self.status = EngineStatus.CREATED
        self.last_error: str | None = None
        self._overrides = dict(params or {})

    # ------------------------------------------------------------------ hooks

    def _load(self) -> None:
        raise NotImplementedError(f"{type(self).__name__}._load")

    def _run(self, event: Envelope, clock: Clock) -> Sequence[Emission]:
        raise NotImplementedError(f"{type(self).__name__}._run")

    def _run_batch(self, events: Sequence[Envelope]) -> list[RunResult]:
        results: list[RunResult] = []
        for event in events:
            try:
                results.append(self._run(event, self.stamper.clock_for(event)))
            except WorkerEventError as exc:
                results.append(exc)
        return results

    def _stop(self) -> None:
        """Release resources (no-op by default)."""

    def _health(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ state snapshots

    def state_kind(self) -> str | None:
        """What this worker's snapshots are (e.g. ``SmaCross@1``: class and state version);
        None when it keeps none. The host restores a snapshot only into the same kind."""
        return None

    def snapshot(self) -> Any:
        """The loaded worker's state, a JSON value.

        Raises:
            WorkerEventError: not taken this time (e.g. the worker's child just died): the host
                hands the input back to be processed again.
            WorkerError: the worker keeps no snapshots, or taking one failed.
        """
        raise WorkerError(self.worker_id, f"{type(self).__name__} keeps no snapshots")

    def restore(self, state: Any) -> None:
        """Give the loaded worker a state that `snapshot` returned (before any event).

        Raises:
            WorkerLoadError: the worker could not take it.
        """
        raise WorkerLoadError(self.worker_id, f"{type(self).__name__} keeps no snapshots")

    # ------------------------------------------------------------------ API

    def load(self) -> None:
        """Validate parameters against the manifest's schema, then load the worker.

        Raises:
            WorkerParamsError: a parameter breaks the schema or a cross-field rule.
            WorkerLoadError: the code, script or library cannot be loaded.
        """
        merged = {**self.manifest.params, **self._overrides}
        self.params = validate_params(self.manifest.params_schema, merged, worker_id=self.worker_id)
        self._load()
        self.status = EngineStatus.READY

    def _check_ready(self) -> None:
        if self.status not in (EngineStatus.READY, EngineStatus.DEGRADED):
            raise WorkerError(self.worker_id, f"engine is {self.status.value}, not ready")

    def process_routed(self, event: Envelope) -> list[Routed]:
        """Process one event; return each output with its topic.

        Raises:
            WorkerEventError: this event failed (the host dead-letters it).
            WorkerError: the engine is not ready or gave up on the worker.
        """
        self._check_ready()
        started = time.perf_counter_ns()
        clock = self.stamper.clock_for(event)
        try:
            emissions = self._run(event, clock)
            outputs = self.stamper.stamp(event, emissions, clock) if emissions else []
        except WorkerEventError as exc:
            self.last_error = exc.reason
            self.metrics.failed(time.perf_counter_ns() - started)
            raise
        except UnroutableError as exc:
            self.last_error = str(exc)
            self.metrics.failed(time.perf_counter_ns() - started)
            raise WorkerEventError(self.worker_id, str(exc), event=event) from None
        self.metrics.observe(time.perf_counter_ns() - started, len(outputs))
        return outputs

    def process(self, event: Envelope) -> list[Envelope]:
        """Process one event; return the stamped output envelopes (possibly none)."""
        return [routed.envelope for routed in self.process_routed(event)]

    async def aprocess_routed(self, event: Envelope) -> list[Routed]:
        """`process_routed` for async hosts (in a worker thread when the engine blocks)."""
        if self.blocking:
            return await asyncio.to_thread(self.process_routed, event)
        return self.process_routed(event)

    async def aprocess(self, event: Envelope) -> list[Envelope]:
        """`process` for async hosts."""
        return [routed.envelope for routed in await self.aprocess_routed(event)]

    def process_batch(self, events: Sequence[Envelope]) -> list[EventOutcome]:
        """Process many events in one go (one frame for out-of-process engines).

        Raises:
            WorkerError: the engine is not ready or gave up on the worker.
        """
        self._check_ready()
        if not events:
            return []
        started = time.perf_counter_ns()
        results = self._run_batch(events)
        each = (time.perf_counter_ns() - started) // len(events)
        outcomes: list[EventOutcome] = []
        for event, result in zip(events, results, strict=True):
            if isinstance(result, WorkerEventError):
                self.last_error = result.reason
                self.metrics.failed(each)
                outcomes.append(EventOutcome(event, [], result))
                continue
            clock = self.stamper.clock_for(event)
            try:
                outputs = self.stamper.stamp(event, result, clock) if result else []
            except UnroutableError as exc:
                error = WorkerEventError(self.worker_id, str(exc), event=event)
                self.metrics.failed(each)
                outcomes.append(EventOutcome(event, [], error))
                continue
            self.metrics.observe(each, len(outputs))
            outcomes.append(EventOutcome(event, outputs))
        return outcomes

    def stop(self) -> None:
        """Stop the worker and release its resources (idempotent)."""
        if self.status is EngineStatus.STOPPED:
            return
        try:
            self._stop()
        finally:
            self.status = EngineStatus.STOPPED

    def health(self) -> EngineHealth:
        """Status, restarts, last error and engine-specific details."""
        extra = self._health()
        return EngineHealth(
            status=self.status,
            restarts=int(extra.pop("restarts", 0)),
            last_error=self.last_error,
            pid=extra.pop("pid", None),
            details=extra,
        )

    def __enter__(self) -> Engine:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
