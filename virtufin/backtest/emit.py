"""Publishing scenario events (orders, fills, positions, PnL) from inside a backtest.

Ids are deterministic (``<runid>-<component>-<n>``) and times are historical, so a rerun with
the same run id publishes exactly the same events. An event nobody is subscribed to is not
built at all (its id is still counted). Each topic is lane-validated on its first
publish (the scenario must be registered and active), later ones skip the check as bars do.
"""

from __future__ import annotations

import itertools
from typing import Any

from virtufin.backtest.market import MarketView
from virtufin.backtest.replay import derive_envelope
from virtufin.bus.memory import MemoryBus
from virtufin.envelope import Envelope

__all__ = ["Emitter"]


class Emitter:
    """Builds and publishes one component's events on the scenario's lanes."""

    __slots__ = (
        "_bus",
        "_counter",
        "_market",
        "_prefix",
        "_template",
        "_validated",
        "run_id",
        "scenario_id",
        "source",
    )

    def __init__(
        self, *, bus: MemoryBus, market: MarketView, scenario_id: str, run_id: str, source: str
    ) -> None:
        self._bus = bus
        self._market = market
        self._counter = itertools.count(1)
        self.scenario_id = scenario_id
        self.run_id = run_id
        self.source = source
        self._prefix = f"{run_id}-{source.rsplit('.', 1)[-1]}-"
        self._validated: set[str] = set()
        self._template = Envelope(
            id="template",
            source=source,
            type="template",
            clocktype="historical",
            scenarioid=scenario_id,
            runid=run_id,
            portfoliolane="hyp",
            strategylane="hyp",
        )

    def skips(self, topic: str) -> bool:
        """Whether nobody would receive an event on `topic` now; if so, the event's id is used
        up, as `emit` would (a caller may then skip even building the payload)."""
        if self._bus.has_subscribers(topic):
            return False
        next(self._counter)
        return True

    def emit(
        self,
        topic: str,
        type: str,
        data: dict[str, Any],
        *,
        at_us: int | None = None,
        correlationid: str | None = None,
    ) -> Envelope | None:
        """Publish `data` as a `type` event on `topic` at historical time `at_us`.

        Nobody subscribed to `topic` (e.g. order acceptances in a run nobody watches): the
        event is not built, None is returned, and its id is used up all the same, so the
        events that are published carry the ids of a run that publishes everything."""
        if self.skips(topic):
            return None
        when = MarketView.to_datetime(self._market.ts_us if at_us is None else at_us)
        envelope = derive_envelope(
            self._template,
            self._prefix + str(next(self._counter)),
            type,
            data,
            when,
            correlationid,
        )
        if topic in self._validated:
            # Checked once per topic; ids are ``<run>-<source>-<n>``, unique by construction.
            self._bus.publish_trusted(topic, envelope)
        else:
            self._bus.publish_sync(topic, envelope)
            self._validated.add(topic)
        return envelope
