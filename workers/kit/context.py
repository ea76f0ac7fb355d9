"""`WorkerContext`: what the host hands a worker — identity, parameters, clock, logger, `emit`.

A worker never builds envelopes or picks topics for trading events: it calls
``ctx.emit(type, data)`` and the host stamps the envelope (``correlationid``, ``scenarioid``,
``runid``, lanes, ``clocktype``, ``eventtime``, ``source``) and routes it
(docs/spec/worker-protocol.md, "Outputs").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from virtufin.envelope import Envelope
from workers.kit.clock import Clock, WallClock
from workers.kit.ids import order_id

__all__ = ["SCENARIO_TYPE_PREFIXES", "Emission", "WorkerContext"]

#: Event types the host always routes to the scenario's own topics (``sc.<sid>.…``).
SCENARIO_TYPE_PREFIXES: Final = (
    "com.virtufin.trading.",
    "com.virtufin.position.",
    "com.virtufin.pnl.",
    "com.virtufin.risk.",
)
_NOTHING: Final[tuple[Emission, ...]] = ()


class Emission(NamedTuple):
    """One event a worker asked to emit, before the host stamps and routes it."""

    type: str
    data: Any = None
    subject: str | None = None
    topic: str | None = None


class WorkerContext:
    """The worker's view of its host.

    Args:
        worker_id: the worker's id (also in its ``source``: ``urn:com.virtufin.worker.<id>``).
        params: validated parameters (schema defaults applied).
        config: the worker's `config_class` instance built from `params`, if it has one.
        clock: the clock `now()` reads; the host switches it per event.
        env: the worker's environment variables (set through the supervisor).
        logger: defaults to ``virtufin.worker.<id>``.

    Example:
        >>> ctx = WorkerContext(worker_id="demo")
        >>> ctx.emit("com.virtufin.trading.order.submitted", {"symbol": "BTCUSDT"})
        >>> [e.type for e in ctx.take_emitted()]
        ['com.virtufin.trading.order.submitted']
    """

    __slots__ = (
        "_drawn",
        "_drawn_for",
        "_emitted",
        "clock",
        "config",
        "env",
        "event",
        "logger",
        "params",
        "worker_id",
    )

    def __init__(
        self,
        *,
        worker_id: str,
        params: Mapping[str, Any] | None = None,
        config: Any = None,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.params: Mapping[str, Any] = MappingProxyType(dict(params or {}))
        self.config = config
        self.clock: Clock = clock if clock is not None else WallClock()
        self.env: Mapping[str, str] = MappingProxyType(dict(env or {}))
        self.logger = logger or logging.getLogger(f"virtufin.worker.{worker_id}")
        self.event: Envelope | None = None
        """The input event being handled (None outside `on_event`)."""
        self._emitted: list[Emission] = []
        self._drawn_for: Envelope | None = None
        self._drawn = 0

    def now(self) -> datetime:
        """The current time: the event's time in a backtest, the wall clock live."""
        return self.clock.now()

    def emit(
        self, type: str, data: Any = None, *, subject: str | None = None, topic: str | None = None
    ) -> None:
        """Queue an output event; the host publishes it after `on_event` returns.

        Args:
            type: CloudEvents type, e.g. ``EventTypes.order("submitted")``.
            data: the JSON payload.
            subject: optional CloudEvents subject.
            topic: where to publish a non-trading event (default: the ``replytopic`` of the
                input, else the worker's output topic). Trading, position, PnL and risk events
                always go to the scenario's topics, so `topic` is refused for them.

        Raises:
            ValueError: `type` is empty, or `topic` was given for a scenario-routed type.
        """
        if not isinstance(type, str) or not type:
            raise ValueError(f"emit: type must be a non-empty string ({type!r})")
        if topic is not None and type.startswith(SCENARIO_TYPE_PREFIXES):
            raise ValueError(f"emit: {type} is routed to the scenario's topic; drop topic=")
        self._emitted.append(Emission(type, data, subject, topic))

    def order_id(self) -> str:
        """A fresh order id for the event being handled, derived from it (`workers.kit.ids`).

        The n-th call while handling one input returns the same id every time that input is
        handled, in any process: a redelivered input re-emits the very orders it emitted
        before (the venue fills them once), and no new input reuses an id.

        Raises:
            RuntimeError: called outside ``on_event`` (no input event to derive the id from).

        Example:
            >>> ctx = WorkerContext(worker_id="w")
            >>> ctx.event = Envelope(id="bar-1", source="urn:x", type="t")
            >>> ctx.order_id(), ctx.order_id()
            ('w-92618f0b273cde134f74', 'w-1264c931a46818efac8e')
        """
        event = self.event
        if event is None:
            raise RuntimeError("order_id() derives the id from the input: call it in on_event")
        if self._drawn_for is not event:
            self._drawn_for = event
            self._drawn = 0
        ordinal = self._drawn
        self._drawn = ordinal + 1
        return order_id(self.worker_id, event.source, event.id, ordinal)

    def take_emitted(self) -> list[Emission] | tuple[Emission, ...]:
        """Hand over (and forget) everything emitted since the last call (the host calls it
        once per input, which also restarts the count of `order_id`)."""
        self._drawn_for = None
        out = self._emitted
        if not out:
            return _NOTHING
        self._emitted = []
        return out
