"""Stamping and routing of worker outputs: the host, not the worker, fills the envelope.

For every emitted event the host sets ``source`` = ``urn:com.virtufin.worker.<id>``, a
deterministic ``id`` (UUIDv5 of the input's source and id and the output's index, so a retried
event yields the same ids and the bus de-duplicates them), ``correlationid`` (the input's, else
the input's id), ``scenarioid`` and ``runid`` (the input's, else the binding's), the lanes and
``traceparent`` (the input's), ``clocktype`` and ``eventtime`` (from the clock; ``time`` equals
``eventtime``) and ``walltime``.

Order ids: a ``com.virtufin.trading.order.submitted`` output whose data has no ``order_id``
(absent, null or empty) gets the deterministic id of `workers.kit.ids.order_id` for the output's
index (the next free ordinal if the worker already used that id itself), and, without a
subject, ``subject = order/<id>``. So scripts and native workers get redelivery-safe ids too.

Topics: ``com.virtufin.trading.<entity>.<event>`` → ``sc.<sid>.trading.<entity>.<event>``;
``com.virtufin.position.<event>`` → ``sc.<sid>.position.<symbol>.<event>`` (``data.symbol``,
else ``portfolio``); ``com.virtufin.pnl.<metric>.<event>`` → ``sc.<sid>.pnl.<metric>.<event>``;
``com.virtufin.risk.<metric>.<event>`` → ``sc.<sid>.risk.<metric>.<event>``. Any other type
goes to the ``topic=`` given to ``emit``, else the input's ``replytopic`` extension, else the
worker's output topic, else nowhere (None: the supervisor counts it as unroutable).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, NamedTuple

from virtufin import topics
from virtufin.envelope import SPECVERSION, ClockType, Envelope, EnvelopeDraft, uuid5_text
from virtufin.errors import TopicError
from virtufin.runtime.constants import WORKER_SOURCE_PREFIX
from workers.kit.clock import Clock, HistoricalClock, WallClock
from workers.kit.context import Emission
from workers.kit.ids import order_id

__all__ = ["Binding", "ClockMode", "Routed", "Stamper", "UnroutableError"]

ClockMode = Literal["auto", "wall", "historical"]
_ID_NAMESPACE: Final = uuid.UUID("5f0c6d38-9a53-4d57-9b43-1c1f62c5a6a1")
_NAMESPACE_BYTES: Final = _ID_NAMESPACE.bytes
_TRADING: Final = "com.virtufin.trading."
_POSITION: Final = "com.virtufin.position."
_PNL: Final = "com.virtufin.pnl."
_RISK: Final = "com.virtufin.risk."
_ORDER_SUBMITTED: Final = "com.virtufin.trading.order.submitted"


class UnroutableError(ValueError):
    """A scenario-routed output has no scenario id, or its type does not make a topic."""


@dataclass(frozen=True, slots=True)
class Binding:
    """How a worker is hosted: fallbacks for what the input does not say, and host services.

    Args:
        scenario_id: used when an input carries no ``scenarioid``.
        run_id: used when an input carries no ``runid``.
        output_topic: overrides the manifest's output topic.
        clock: ``auto`` follows the input's ``clocktype`` (historical inputs set the clock to
            their ``eventtime``); ``wall`` or ``historical`` force one.
        env: the worker's environment variables.
        gateway: ``(service, method, request bytes) -> response bytes`` for native workers'
            ``gateway_call``; None answers "unavailable".
    """

    scenario_id: str | None = None
    run_id: str | None = None
    output_topic: str | None = None
    clock: ClockMode = "auto"
    env: Mapping[str, str] = field(default_factory=dict)
    gateway: Callable[[str, str, bytes], bytes] | None = None


class Routed(NamedTuple):
    """One stamped output and the topic it goes to (None: no route)."""

    topic: str | None
    envelope: Envelope


class Stamper:
    """Builds output envelopes and picks their topics for one worker."""

    def __init__(self, worker_id: str, *, binding: Binding, output_topic: str | None) -> None:
        self.worker_id = worker_id
        self.source = WORKER_SOURCE_PREFIX + worker_id
        self.binding = binding
        self.output_topic = binding.output_topic or output_topic
        self.wall = WallClock()
        self.historical = HistoricalClock()
        self._topics: dict[tuple[str, str, str | None], str] = {}

    def clock_for(self, event: Envelope) -> Clock:
        """The clock for `event`; a historical clock is first set to the event's time."""
        mode = self.binding.clock
        if mode == "wall" or (mode == "auto" and event.clocktype != "historical"):
            return self.wall
        when = event.eventtime or event.time
        if when is not None:
            self.historical.set(when)
        return self.historical

    def _scenario_topic(self, kind: str, sid: str | None, data: Any) -> str:
        if sid is None:
            raise UnroutableError(f"{kind} needs a scenario id (none on the input or binding)")
        symbol = None
        if kind.startswith(_POSITION):
            raw = data.get("symbol") if isinstance(data, Mapping) else None
            symbol = raw if isinstance(raw, str) and raw else "portfolio"
        key = (kind, sid, symbol)
        topic = self._topics.get(key)
        if topic is None:
            tokens = kind.split(".")[2:]
            if symbol is not None:
                tokens.insert(1, symbol)
            try:
                topic = topics.scenario_topic(sid, *tokens)
            except (TopicError, TypeError) as exc:
                raise UnroutableError(f"{kind} does not make a scenario topic ({exc})") from None
            self._topics[key] = topic
        return topic

    def route(self, kind: str, data: Any, explicit: str | None, event: Envelope) -> str | None:
        """The topic of one output (see the module docstring)."""
        if kind.startswith((_TRADING, _POSITION, _PNL, _RISK)):
            return self._scenario_topic(kind, event.scenarioid or self.binding.scenario_id, data)
        if explicit is not None:
            return explicit
        reply = event.extensions.get("replytopic") if event.extensions else None
        return reply if isinstance(reply, str) else self.output_topic

    def _with_order_id(
        self,
        event: Envelope,
        emissions: Sequence[Emission],
        index: int,
        data: Mapping[str, Any],
        subject: str | None,
    ) -> tuple[dict[str, Any], str | None]:
        """`data` with the host-made order id of output `index` (see the module docstring)."""
        taken = {
            str(e.data["order_id"])
            for e in emissions
            if e.type == _ORDER_SUBMITTED and isinstance(e.data, Mapping) and e.data.get("order_id")
        }
        ordinal = index
        made = order_id(self.worker_id, event.source, event.id, ordinal)
        while made in taken:
            ordinal += len(emissions)
            made = order_id(self.worker_id, event.source, event.id, ordinal)
        filled = dict(data)
        filled["order_id"] = made
        return filled, subject if subject is not None else f"order/{made}"

    def stamp(self, event: Envelope, emissions: Sequence[Emission], clock: Clock) -> list[Routed]:
        """Envelopes and topics for everything one input produced.

        Raises:
            UnroutableError: a scenario-routed output cannot be given a topic.
        """
        now = clock.now()
        clocktype: ClockType = clock.clocktype
        walltime = datetime.now(UTC) if clocktype == "historical" else now
        base = f"{event.source}|{event.id}|"
        scenarioid = event.scenarioid or self.binding.scenario_id
        routed = self._topics
        out: list[Routed] = []
        for index, (kind, data, subject, explicit) in enumerate(emissions):
            if (
                kind == _ORDER_SUBMITTED
                and (type(data) is dict or isinstance(data, Mapping))  # (a dict: no ABC check)
                and not data.get("order_id")
            ):
                data, subject = self._with_order_id(event, emissions, index, data, subject)
            # The constructor's fields, assembled without its per-field frozen setattr.
            draft = EnvelopeDraft()
            draft.id = uuid5_text(_NAMESPACE_BYTES, base + str(index))
            draft.source = self.source
            draft.type = kind
            draft.data = data
            draft.time = now
            draft.subject = subject
            draft.datacontenttype = "application/json"
            draft.dataschema = None
            draft.correlationid = event.correlationid or event.id
            draft.scenarioid = scenarioid
            draft.runid = event.runid or self.binding.run_id
            draft.clocktype = clocktype
            draft.eventtime = now
            draft.walltime = walltime
            draft.marketlane = event.marketlane
            draft.marketselector = event.marketselector
            draft.portfoliolane = event.portfoliolane
            draft.strategylane = event.strategylane
            draft.traceparent = event.traceparent
            draft.extensions = {}
            draft.specversion = SPECVERSION
            draft.__class__ = Envelope  # type: ignore[assignment]  # `seal`, inlined
            # A trading event's topic once routed (`_scenario_topic`'s cache), else `route`.
            topic = (
                routed.get((kind, scenarioid, None))
                if scenarioid is not None and kind.startswith(_TRADING)
                else None
            )
            if topic is None:
                topic = self.route(kind, data, explicit, event)
            out.append(Routed(topic, draft))  # type: ignore[arg-type]
        return out
