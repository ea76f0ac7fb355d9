"""Publish-time lane validation, run by every bus adapter before an event leaves the process.

Rules (docs/spec/lanes-and-topics.md): the topic parses (act carries no selector, hyp must);
``sc.<id>.*`` needs LIVE or a registered, active scenario; the envelope's `scenarioid` and
`marketselector`, when set, agree with the topic.
"""

from __future__ import annotations

from virtufin.envelope import Envelope
from virtufin.errors import PublishRejectedError, ScenarioError, TopicError
from virtufin.lanes import LIVE, Family, Topic, parse
from virtufin.scenarios import ScenarioRegistry, ScenarioStatus

__all__ = ["LaneValidator"]

_PARSED_CACHE = 4096


class LaneValidator:
    """Checks topics and envelopes; with a registry, also the scenario's status."""

    def __init__(self, registry: ScenarioRegistry | None = None) -> None:
        self.registry = registry
        self._parsed: dict[str, Topic] = {}

    def _parse(self, topic: str) -> Topic:
        """`lanes.parse`, remembered per topic (a process publishes to few distinct topics)."""
        parsed = self._parsed.get(topic)
        if parsed is None:
            try:
                parsed = parse(topic)
            except TopicError as exc:
                raise PublishRejectedError(topic, exc.reason) from None
            if len(self._parsed) >= _PARSED_CACHE:
                self._parsed.clear()
            self._parsed[topic] = parsed
        return parsed

    def _static(self, topic: str, envelope: Envelope) -> Topic:
        parsed = self._parse(topic)
        if parsed.family is Family.SCENARIO:
            if envelope.scenarioid is not None and envelope.scenarioid != parsed.scenario_id:
                raise PublishRejectedError(
                    topic,
                    f"envelope scenarioid {envelope.scenarioid!r} does not match the topic",
                )
        elif parsed.family is Family.HYP:
            if envelope.marketselector not in (None, parsed.selector):
                raise PublishRejectedError(
                    topic, f"envelope marketselector {envelope.marketselector!r} != topic selector"
                )
        elif parsed.family is Family.ACT and envelope.marketselector is not None:
            raise PublishRejectedError(topic, "act topics MUST NOT carry a selector")
        return parsed

    def check_sync(self, topic: str, envelope: Envelope) -> None:
        """For synchronous dispatch: needs the scenario already in the registry's cache.

        Raises:
            PublishRejectedError: a rule is broken, or the scenario's status is unknown here.
        """
        parsed = self._static(topic, envelope)
        sid = parsed.scenario_id
        if sid is None or sid == LIVE or self.registry is None:
            return
        status = self.registry.cached_status(sid)
        if status is None:
            raise PublishRejectedError(
                topic, f"scenario {sid!r} is not registered (or not looked up yet)"
            )
        if status is not ScenarioStatus.ACTIVE:
            raise PublishRejectedError(topic, f"scenario {sid!r} is {status.value}, not active")

    async def check(self, topic: str, envelope: Envelope) -> None:
        """Full check, looking the scenario up in the registry (TTL-cached).

        Raises:
            PublishRejectedError: a rule is broken; the message says which.
        """
        parsed = self._static(topic, envelope)
        sid = parsed.scenario_id
        if sid is None or sid == LIVE or self.registry is None:
            return
        try:
            await self.registry.ensure_publishable(sid)
        except ScenarioError as exc:
            raise PublishRejectedError(topic, str(exc)) from None
