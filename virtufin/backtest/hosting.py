"""Hosting the strategy: any worker, through the worker runtime, on the replayed lanes.

The backtest does not call strategy code itself: it loads the worker into a runtime `Engine`
(chosen by the manifest's MIME type: in-process class, ``text/x-python`` child, native
library) and subscribes that engine to the ``hyp.<selector>`` bar lanes of the in-process bus,
exactly as the WorkManager subscribes it to ``act`` lanes live. Outputs are published on the
topics the runtime routes them to (orders go to ``sc.<sid>.trading.order.submitted``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from virtufin.bus.memory import MemoryBus
from virtufin.bus.port import Delivery
from virtufin.envelope import Envelope
from virtufin.errors import WorkerError, WorkerEventError, WorkerLoadError
from virtufin.runtime.engine import Engine
from virtufin.runtime.factory import create_engine
from virtufin.runtime.manifest import WorkerManifest, resolve_target
from virtufin.runtime.routing import Binding

__all__ = ["WorkerHost", "load_engine", "resolve_strategy"]

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

    def batch_worker(self) -> Any | None:
        """The in-process worker object if it implements ``on_batch`` (the batch path)."""
        worker = getattr(self.engine, "worker", None)
        if worker is None:
            return None
        from workers.kit.worker import Worker

        on_batch = getattr(type(worker), "on_batch", None)
        if on_batch is None or on_batch is Worker.on_batch:
            return None
        return worker

    def stop(self) -> None:
        self.unsubscribe()
        self.engine.stop()
