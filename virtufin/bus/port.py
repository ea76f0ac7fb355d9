"""The event-bus port: publish envelopes to topics, subscribe handlers to NATS-style patterns.

Guarantees every adapter keeps (tests/contract/test_bus_contract.py runs the same suite on
each): at-least-once delivery with ack on handler success; redelivery on handler failure up to
`max_deliveries`, then the event goes to ``bus.deadletter`` with the reason attached;
de-duplication by (``source``, ``id``); competing consumers within a `group`; publish-time lane
validation (`LaneValidator`).

Per subscription, ``ordered=True`` asks for strict order: the subscription's events reach its
handler one at a time in the order they were stored, and an event is not handed out before the
one before it was settled (acked, or dead-lettered after its last attempt) — a failed event is
retried *before* anything newer, and one held by a subscriber that died comes back before
anything newer too. That is what a stateful, order-sensitive consumer (an SMA window, a book)
needs; it costs throughput (one event in flight per group: each event waits for the previous
one's acknowledgement round trip) and, on NATS, a dead member's event returns only after the
(shorter) ordered ack wait. Adapters honour it as follows: NATS — a consumer with
``max_ack_pending=1``; memory — one active member per group, retries in place; Dapr — in order
within the process, across restarts only when the pub/sub component delivers one message at a
time (``maxAckPending: 1`` on ``pubsub.jetstream``, see `virtufin.bus.dapr`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from virtufin import topics
from virtufin.envelope import Envelope

__all__ = [
    "DEFAULT_MAX_DELIVERIES",
    "AsyncHandler",
    "Delivery",
    "EventBus",
    "Subscription",
    "dead_letter_envelope",
    "dedup_key",
]

DEFAULT_MAX_DELIVERIES: Final = 5


@dataclass(frozen=True, slots=True)
class Delivery:
    """How an event reached a handler: on which topic, the how-many-th attempt, which group."""

    topic: str
    attempt: int = 1
    group: str | None = None


AsyncHandler = Callable[[Envelope, Delivery], Awaitable[None]]


class Subscription(ABC):
    """A live subscription; `unsubscribe` stops deliveries (idempotent)."""

    pattern: str
    group: str | None

    @abstractmethod
    async def unsubscribe(self) -> None:
        raise NotImplementedError("Subscription.unsubscribe")


class EventBus(ABC):
    """Base class of every bus adapter.

    | method      | required | notes                                                  |
    |-------------|----------|--------------------------------------------------------|
    | publish     | yes      | validates topic and envelope; raises PublishRejectedError |
    | publish_many| no       | several events, issued in order, one wait for all acks |
    | subscribe   | yes      | `*`/`>` patterns; `group` = competing consumers;       |
    |             |          | `ordered` = one at a time, strictly in stored order    |
    | close       | no       | drain and release connections                          |
    """

    name: str = "abstract"

    @abstractmethod
    async def publish(self, topic: str, envelope: Envelope) -> None:
        raise NotImplementedError("EventBus.publish")

    async def publish_many(self, items: Sequence[tuple[str, Envelope]]) -> None:
        """Publish several events in this order; returns once every one is stored.

        Adapters with a broker round trip issue them back to back and wait once (the default
        publishes one after the other). On a failure some of the events may be stored and
        others not; retrying the whole batch is safe (ids de-duplicate).
        """
        for topic, envelope in items:
            await self.publish(topic, envelope)

    @abstractmethod
    async def subscribe(
        self,
        pattern: str,
        handler: AsyncHandler,
        *,
        group: str | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        ordered: bool = False,
    ) -> Subscription:
        """Deliver events on topics matching `pattern` to `handler`.

        Args:
            group: members with the same (pattern, group) compete for the events.
            max_deliveries: attempts before an event is dead-lettered.
            ordered: strict order (see the module docstring); a property of the group, so
                every member of a group should ask for the same.
        """
        raise NotImplementedError("EventBus.subscribe")

    async def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Drain and release connections."""

    async def __aenter__(self) -> EventBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def dead_letter_envelope(
    envelope: Envelope, *, topic: str, reason: str, attempts: int, group: str | None
) -> Envelope:
    """The original event with the failure attached as extensions (``dl*``)."""
    extensions = dict(envelope.extensions)
    extensions.update(
        {
            "dltopic": topic,
            "dlreason": reason[:2000],
            "dlattempts": attempts,
            "dlgroup": group or "",
        }
    )
    return envelope.with_changes(extensions=extensions)


def dedup_key(envelope: Envelope, topic: str) -> tuple[str, str]:
    """What a subscriber de-duplicates a delivery by: (``source``, ``id``).

    A dead letter keeps its event's pair, so on ``bus.deadletter`` the id is qualified by
    where and for which group the event failed: each group's letter is an event of its own,
    and a subscriber that handled the original still gets the letter.
    """
    if topic != topics.DEAD_LETTER:
        return envelope.source, envelope.id
    ext = envelope.extensions
    return envelope.source, f"{envelope.id}|dl|{ext.get('dltopic', '')}|{ext.get('dlgroup', '')}"
