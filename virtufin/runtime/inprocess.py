"""The in-process Python engine (``application/x-python-class``): the fast path.

The worker class is resolved from ``module:Class``, ``path/to/file.py:Class`` or the name of an
entry point in the ``virtufin.workers`` group, instantiated once, and called directly with the
frozen input `Envelope` (no serialisation). It shares the host's process, so it cannot be
timed out or killed: run untrusted code as ``text/x-python`` instead.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from time import perf_counter_ns
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from virtufin.envelope import Envelope
from virtufin.errors import WorkerError, WorkerEventError, WorkerLoadError, WorkerParamsError
from virtufin.runtime.constants import MIME_PYTHON_CLASS
from virtufin.runtime.engine import Engine, EngineStatus
from virtufin.runtime.routing import Routed, UnroutableError
from workers.kit.clock import Clock
from workers.kit.context import Emission, WorkerContext
from workers.kit.worker import Worker

__all__ = ["ENTRY_POINT_GROUP", "InProcessEngine", "resolve_worker_class"]

ENTRY_POINT_GROUP = "virtufin.workers"
_READY = EngineStatus.READY


def _import_file(path: Path, worker_id: str) -> ModuleType:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"_virtufin_worker_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise WorkerLoadError(worker_id, f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def resolve_worker_class(entry_point: str, *, worker_id: str = "") -> type[Worker]:
    """Find the `Worker` subclass an entry point names.

    Raises:
        WorkerLoadError: the module, file, attribute or entry point is missing or is not a
            `Worker` subclass (the message says which).
    """
    try:
        if ":" in entry_point:
            where, _, attr = entry_point.rpartition(":")
            if where.endswith(".py"):
                path = Path(where)
                if not path.is_file():
                    raise WorkerLoadError(worker_id, f"{where}: no such file")
                module = _import_file(path, worker_id)
            else:
                module = importlib.import_module(where)
            obj: Any = module
            for part in attr.split("."):
                obj = getattr(obj, part)
        else:
            found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=entry_point)
            if not found:
                raise WorkerLoadError(
                    worker_id, f"no entry point {entry_point!r} in group {ENTRY_POINT_GROUP}"
                )
            obj = next(iter(found)).load()
    except WorkerLoadError:
        raise
    except ModuleNotFoundError as exc:
        raise WorkerLoadError(worker_id, f"cannot import {entry_point}: {exc}") from None
    except AttributeError as exc:
        raise WorkerLoadError(worker_id, f"cannot find {entry_point}: {exc}") from None
    except Exception as exc:
        raise WorkerLoadError(
            worker_id, f"importing {entry_point} raised {type(exc).__name__}: {exc}"
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, Worker)):
        raise WorkerLoadError(worker_id, f"{entry_point} is not a subclass of workers.kit.Worker")
    return obj


def _config_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        loc = ".".join(map(str, err["loc"]))
        problems.append(f"{loc}: {msg}" if loc else msg)
    return problems


class InProcessEngine(Engine):
    """Hosts a `Worker` subclass in this process."""

    mime_type = MIME_PYTHON_CLASS
    isolation = "in_process"

    def _load(self) -> None:
        cls = resolve_worker_class(self.manifest.entry_point, worker_id=self.worker_id)
        config = None
        if cls.config_class is not None:
            try:
                config = cls.config_class(**self.params)
            except ValidationError as exc:
                raise WorkerParamsError(self.worker_id, _config_problems(exc)) from None
        try:
            worker = cls()
        except Exception as exc:
            raise WorkerLoadError(
                self.worker_id, f"{cls.__name__}() raised {type(exc).__name__}: {exc}"
            ) from None
        ctx = WorkerContext(
            worker_id=self.worker_id,
            params=self.params,
            config=config,
            clock=self.stamper.wall,
            env=self.binding.env,
            logger=self.logger,
        )
        worker.ctx = ctx
        try:
            worker.on_start(ctx)
        except Exception as exc:
            raise WorkerLoadError(
                self.worker_id, f"on_start raised {type(exc).__name__}: {exc}"
            ) from None
        self.worker = worker
        self.ctx = ctx
        self._on_event = worker.on_event

    def _run(self, event: Envelope, clock: Clock) -> Sequence[Emission]:
        ctx = self.ctx
        ctx.clock = clock
        ctx.event = event
        try:
            result = self._on_event(event)
        except Exception as exc:
            ctx.take_emitted()
            raise WorkerEventError(
                self.worker_id, f"on_event raised {type(exc).__name__}: {exc}", event=event
            ) from exc
        finally:
            ctx.event = None
        if result is not None:
            ctx.take_emitted()
            raise WorkerEventError(
                self.worker_id,
                f"on_event returned {type(result).__name__}; return None and emit via ctx.emit",
                event=event,
            )
        return ctx.take_emitted()

    def _failure(self, event: Envelope, started: int, reason: str) -> WorkerEventError:
        self.ctx.take_emitted()
        self.last_error = reason
        self.metrics.failed(perf_counter_ns() - started)
        return WorkerEventError(self.worker_id, reason, event=event)

    def process_routed(self, event: Envelope) -> list[Routed]:
        """`Engine.process_routed` inlined for the fast path (same behaviour and errors)."""
        if self.status is not _READY:
            self._check_ready()
        started = perf_counter_ns()
        stamper = self.stamper
        mode = self.binding.clock
        clock: Clock
        if mode == "historical" or (mode == "auto" and event.clocktype == "historical"):
            clock = stamper.historical
            when = event.eventtime or event.time
            if when is not None:
                clock.set(when)
        else:
            clock = stamper.wall
        ctx = self.ctx
        ctx.clock = clock
        ctx.event = event
        try:
            result = self._on_event(event)
        except Exception as exc:
            ctx.event = None
            reason = f"on_event raised {type(exc).__name__}: {exc}"
            raise self._failure(event, started, reason) from exc
        ctx.event = None
        if result is not None:
            reason = f"on_event returned {type(result).__name__}; return None and emit via ctx.emit"
            raise self._failure(event, started, reason)
        emitted = ctx.take_emitted()
        if emitted:
            try:
                outputs = stamper.stamp(event, emitted, clock)
            except UnroutableError as exc:
                raise self._failure(event, started, str(exc)) from None
        else:
            outputs = []
        # `self.metrics.observe(elapsed, len(outputs))`, inlined: this runs once per event.
        elapsed = perf_counter_ns() - started
        metrics = self.metrics
        metrics.events_in += 1
        metrics.events_out += len(outputs)
        metrics.total_ns += elapsed
        metrics.buckets[(elapsed // 1000).bit_length()] += 1
        return outputs

    def process(self, event: Envelope) -> list[Envelope]:
        outputs = self.process_routed(event)
        return [routed.envelope for routed in outputs] if outputs else []

    def state_kind(self) -> str | None:
        worker = getattr(self, "worker", None)
        if worker is None or not type(worker).is_stateful():
            return None
        return f"{type(worker).__qualname__}@{type(worker).state_version}"

    def snapshot(self) -> Any:
        try:
            return self.worker.snapshot()
        except Exception as exc:
            raise WorkerError(
                self.worker_id, f"snapshot raised {type(exc).__name__}: {exc}"
            ) from exc

    def restore(self, state: Any) -> None:
        try:
            self.worker.restore(state)
        except Exception as exc:
            raise WorkerLoadError(
                self.worker_id, f"restore raised {type(exc).__name__}: {exc}"
            ) from exc

    def _stop(self) -> None:
        worker = getattr(self, "worker", None)
        if worker is None:
            return
        try:
            worker.on_stop()
        except Exception:
            self.logger.exception("on_stop of %s raised", self.worker_id)
