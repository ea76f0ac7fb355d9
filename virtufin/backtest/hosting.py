"""Hosting the strategy: any worker, through the worker runtime, on the replayed lanes.

The backtest does not call strategy code itself: it loads the worker into a runtime `Engine`
(chosen by the manifest's MIME type: in-process class, ``text/x-python`` child, native
library) and subscribes that engine to the ``hyp.<selector>`` bar lanes of the in-process bus,
exactly as the WorkManager subscribes it to ``act`` lanes live. Outputs are published on the
topics the runtime routes them to (orders go to ``sc.<sid>.trading.order.submitted``).

The batch path (`WorkerHost.batch_runner`) calls the worker once per record batch instead: a
class worker's ``on_batch`` in process, or a native library's ``OnBatch`` (zero-copy through
the Arrow C data interface). Out-of-process engines cannot take batches.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from virtufin.bus.memory import MemoryBus
from virtufin.bus.port import Delivery
from virtufin.envelope import Envelope
from virtufin.errors import ConfigError, WorkerError, WorkerEventError, WorkerLoadError
from virtufin.runtime.constants import MIME_NATIVE
from virtufin.runtime.engine import Engine
from virtufin.runtime.factory import create_engine
from virtufin.runtime.manifest import WorkerManifest, resolve_target
from virtufin.runtime.native import NativeEngine
from virtufin.runtime.routing import Binding
from workers.kit.clock import Clock

__all__ = ["BatchRunner", "WorkerHost", "load_engine", "resolve_strategy"]

BatchRunner = Callable[[Any, Clock], list[Any]]
"""``runner(record_batch, clock)`` → what the worker decided on the batch: `OrderBatch`es,
`virtufin.runtime.native.OrderColumns`, `Emission`s, envelopes or order dicts (with ``row``).
Raises `WorkerError` when the worker fails the batch."""

log = logging.getLogger(__name__)
_BUNDLED_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _workers_dir() -> Path | None:
    try:
        import workers
    except ImportError:
        return None
    return Path(workers.__file__).resolve().parent


def resolve_strategy(spec: str) -> WorkerManifest:
    """``sma_cross`` (a bundled worker), a ``manifest.json``, ``file.py[:Class]``, a native
    library or ``module:Class`` → the worker's manifest.

    Raises:
        WorkerLoadError: nothing by that name, or an invalid manifest.
    """
    if _BUNDLED_RE.match(spec):
        folder = _workers_dir()
        manifest = folder / spec / "manifest.json" if folder is not None else None
        if manifest is not None and manifest.is_file():
            return WorkerManifest.load(manifest)
        raise WorkerLoadError(spec, "no bundled worker by that name (workers/<name>/manifest.json)")
    return resolve_target(spec)


def load_engine(
    strategy: str | WorkerManifest | Engine,
    *,
    params: Mapping[str, Any] | None,
    scenario_id: str,
    run_id: str,
) -> Engine:
    """A loaded engine for `strategy` bound to the backtest's scenario and run."""
    if isinstance(strategy, Engine):
        return strategy
    manifest = strategy if isinstance(strategy, WorkerManifest) else resolve_strategy(strategy)
    binding = Binding(scenario_id=scenario_id, run_id=run_id, clock="historical")
    engine = create_engine(manifest, params=dict(params or {}), binding=binding)
    engine.load()
    return engine


class WorkerHost:
    """Feeds bus events to one engine and publishes what it returns.

    A failure on one event is counted and logged (live, the host would dead-letter it); an
    engine that gives up (`WorkerError`) stops the run at the end of the current batch.
    """

    def __init__(self, engine: Engine, bus: MemoryBus) -> None:
        self.engine = engine
        self.bus = bus
        self.errors = 0
        self.unroutable = 0
        self.first_error: str | None = None
        self.fatal: WorkerError | None = None
        self._process = engine.process_routed
        self._subscriptions: list[Any] = []

    @property
    def worker_id(self) -> str:
        return self.engine.worker_id

    def subscribe(self, pattern: str) -> None:
        self._subscriptions.append(self.bus.subscribe_sync(pattern, self.handle, max_deliveries=1))

    def unsubscribe(self) -> None:
        for sub in self._subscriptions:
            sub.unsubscribe_sync()
        self._subscriptions.clear()

    def handle(self, envelope: Envelope, delivery: Delivery) -> None:
        """Bus handler (the hot path: one call per replayed bar)."""
        try:
            outputs = self._process(envelope)
        except WorkerEventError as exc:
            self._failed(exc.reason)
            return
        except WorkerError as exc:
            self.fatal = exc
            self.unsubscribe()
            return
        if outputs:
            self.publish(outputs)

    def publish(self, outputs: list[Any]) -> None:
        publish = self.bus.publish_sync
        for topic, out in outputs:
            if topic is None:
                self.unroutable += 1
            else:
                publish(topic, out)

    def _failed(self, reason: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = reason
            log.warning("worker %s failed on an event: %s", self.worker_id, reason)

    def batch_runner(self) -> BatchRunner:
        """How the batch path calls this worker: a class worker's ``on_batch`` (in process) or a
        native library's ``OnBatch`` (in process, zero-copy).

        Raises:
            ConfigError: the engine cannot take whole batches (no ``on_batch``/``OnBatch``, or
                the worker runs out of process: a script, or a native library in safe mode).
        """
        engine = self.engine
        worker = getattr(engine, "worker", None)
        if worker is not None:
            from workers.kit.worker import Worker

            on_batch = getattr(type(worker), "on_batch", None)
            if on_batch is None or on_batch is Worker.on_batch:
                raise ConfigError(
                    "backtest", "mode", f"worker {engine.worker_id} has no on_batch (in process)"
                )
            return _python_runner(worker, engine.worker_id)
        if isinstance(engine, NativeEngine):
            if not engine.has_on_batch:
                name = Path(engine.manifest.entry_point).name
                raise ConfigError(
                    "backtest",
                    "mode",
                    f"worker {engine.worker_id} has no on_batch: {name} does not export OnBatch "
                    "(the native batch extension, docs/spec/native-abi.md)",
                )
            return _native_runner(engine)
        if engine.isolation == "process":
            how = "a native library in safe mode" if engine.mime_type == MIME_NATIVE else "a script"
            raise ConfigError(
                "backtest",
                "mode",
                f"worker {engine.worker_id} runs out of process ({how}); mode=batch needs an "
                "in-process engine: a class worker with on_batch, or a native library exporting "
                "OnBatch without safe mode",
            )
        raise ConfigError(
            "backtest",
            "mode",
            f"worker {engine.worker_id}: {type(engine).__name__} takes no batches",
        )

    def stop(self) -> None:
        self.unsubscribe()
        self.engine.stop()


def _python_runner(worker: Any, worker_id: str) -> BatchRunner:
    def run(record: Any, clock: Clock) -> list[Any]:
        ctx = worker.ctx
        ctx.clock = clock
        try:
            returned = worker.on_batch(record)
        except Exception as exc:
            ctx.take_emitted()
            raise WorkerError(worker_id, f"on_batch raised {type(exc).__name__}: {exc}") from exc
        emitted = list(ctx.take_emitted())
        if isinstance(returned, list | tuple):
            emitted.extend(returned)
        return emitted

    return run


def _native_runner(engine: NativeEngine) -> BatchRunner:
    def run(record: Any, clock: Clock) -> list[Any]:
        return list(engine.on_batch(record))

    return run
