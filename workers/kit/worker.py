"""`Worker`: the base class of class-based workers (``application/x-python-class``).

The host calls the hooks in this order: ``on_start(ctx)`` once, ``restore(state)`` when a
snapshot of an earlier run exists, ``on_event(event)`` for every subscribed event (in order,
never concurrently), ``snapshot()`` after events when the host keeps snapshots, ``on_stop()``
once. Outputs go through ``self.ctx.emit``; `on_event` returns None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel

from virtufin.envelope import Envelope
from workers.kit.context import WorkerContext

__all__ = ["Worker"]


class Worker:
    """Base class of in-process Python workers.

    | hook       | required | called                                                  |
    |------------|----------|---------------------------------------------------------|
    | on_event   | yes      | once per input `Envelope`; emit through `self.ctx`      |
    | on_start   | no       | once before the first event (`self.ctx` is already set) |
    | on_stop    | no       | once at stop or before a hot reload replaces the worker |
    | on_batch   | no       | the columnar path: one `pyarrow.RecordBatch` of events  |
    | snapshot   | no       | the state to persist, as a fresh JSON value             |
    | restore    | with it  | resume from what `snapshot` returned in an earlier run  |

    Set `config_class` to a pydantic model (``frozen=True, extra="forbid"``) to get typed
    parameters in ``self.ctx.config``; its validators check cross-field rules and the host
    reports their messages as a `WorkerParamsError` before the worker starts.

    Snapshots: a worker that overrides `snapshot` is stateful. Hosted live (the WorkManager),
    its snapshot is saved in the state store after every input that changed it, before that
    input is acknowledged, and a restarted worker (new process, same store) gets `restore`
    before its first event: it resumes where it left off (`workers.kit.snapshots`). A snapshot
    is restored only into a worker of the same class name, `state_version` and parameters;
    bump `state_version` when the snapshot's shape changes. Backtests keep no snapshots.

    Example:
        >>> from virtufin.topics import EventTypes
        >>> class Hello(Worker):
        ...     def on_event(self, event: Envelope) -> None:
        ...         self.ctx.emit("com.example.hello", {"seen": event.type})
    """

    config_class: ClassVar[type[BaseModel] | None] = None
    state_version: ClassVar[int] = 1
    """The shape of `snapshot`'s value; a stored snapshot of another version is not restored."""
    ctx: WorkerContext

    def on_start(self, ctx: WorkerContext) -> None:
        """Prepare state; `ctx` is also available as ``self.ctx``."""

    def on_event(self, event: Envelope) -> None:
        """Handle one event; emit outputs with ``self.ctx.emit``."""
        raise NotImplementedError(f"{type(self).__name__}.on_event")

    def on_stop(self) -> None:
        """Release resources."""

    def on_batch(self, batch: Any) -> Sequence[Any] | None:
        """Handle a `pyarrow.RecordBatch` of events at once (the batch path): emit orders
        with ``{"row": …}``, or return them, e.g. as columnar `workers.kit.batch.OrderBatch`."""
        raise NotImplementedError(f"{type(self).__name__}.on_batch")

    def snapshot(self) -> Any:
        """The state to persist: a JSON value built afresh (not a live reference to state the
        worker keeps mutating). Not overridden: the worker keeps no state worth persisting."""
        raise NotImplementedError(f"{type(self).__name__}.snapshot")

    def restore(self, state: Any) -> None:
        """Resume from `state`, a value `snapshot` returned (after `on_start`, before events)."""
        raise NotImplementedError(f"{type(self).__name__}.restore")

    @classmethod
    def is_stateful(cls) -> bool:
        """Whether the class overrides `snapshot` (the host keeps its snapshots)."""
        return cls.snapshot is not Worker.snapshot
