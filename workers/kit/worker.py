"""`Worker`: the base class of class-based workers (``application/x-python-class``).

The host calls the hooks in this order: ``on_start(ctx)`` once, ``on_event(event)`` for every
subscribed event (in order, never concurrently), ``on_stop()`` once. Outputs go through
``self.ctx.emit``; `on_event` returns None.
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

    Set `config_class` to a pydantic model (``frozen=True, extra="forbid"``) to get typed
    parameters in ``self.ctx.config``; its validators check cross-field rules and the host
    reports their messages as a `WorkerParamsError` before the worker starts.

    Example:
        >>> from virtufin.topics import EventTypes
        >>> class Hello(Worker):
        ...     def on_event(self, event: Envelope) -> None:
        ...         self.ctx.emit("com.example.hello", {"seen": event.type})
    """

    config_class: ClassVar[type[BaseModel] | None] = None
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
