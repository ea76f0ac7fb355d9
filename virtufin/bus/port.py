"""The event-bus port: publish envelopes to topics, subscribe handlers to NATS-style patterns.

Guarantees every adapter keeps (tests/contract/test_bus_contract.py runs the same suite on
each): at-least-once delivery with ack on handler success; redelivery on handler failure up to
`max_deliveries`, then the event goes to ``bus.deadletter`` with the reason attached;
de-duplication by (``source``, ``id``); competing consumers within a `group`; publish-time lane
validation (`LaneValidator`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from virtufin.envelope import Envelope

__all__ = [
    "DEFAULT_MAX_DELIVERIES",
    "AsyncHandler",
    "Delivery",
    "EventBus",
    "Subscription",
    "dead_letter_envelope",
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
    | subscribe   | yes      | `*`/`>` patterns; `group` = competing consumers        |
    | close       | no       | drain and release connections                          |
    """

    name: str = "abstract"

    @abstractmethod
    async def publish(self, topic: str, envelope: Envelope) -> None:
        raise NotImplementedError("EventBus.publish")

    @abstractmethod
    async def subscribe(
        self,
        pattern: str,
        handler: AsyncHandler,
        *,
        group: str | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
    ) -> Subscription:
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
