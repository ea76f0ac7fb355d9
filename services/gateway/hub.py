"""Fan-out of bus events to the gateway's streams, sharing one bus subscription per pattern.

A `Listener` is one client stream: a bounded queue and a filter. The hub subscribes the bus once
per distinct pattern (fan-out, no group) however many streams use it, and drops the
subscription with its last listener, so 50 streams on ``workmanager.lifecycle`` cost one broker
consumer. A slow stream loses its oldest queued events (counted in `Listener.dropped`) rather
than holding up the bus or the other streams. Group subscriptions (competing consumers) are not
shared: they get their own bus subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from services.gateway.events import service_of_source
from virtufin.bus.port import AsyncHandler, Delivery, EventBus, Subscription
from virtufin.client import READY_HEADER
from virtufin.envelope import Envelope
from virtufin.lanes import matches, validate_pattern

__all__ = ["DEFAULT_QUEUE_SIZE", "READY_HEADER", "EventFilter", "EventHub", "Listener"]

log = logging.getLogger(__name__)
DEFAULT_QUEUE_SIZE: Final = 10_000

_DEDUP: Final = 4096
_CLOSED: Final = None


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a stream wants; empty parts match everything, parts are ANDed.

    Args:
        services: producing services (``urn:com.virtufin.<service>`` sources; a prefix
            ``worker`` also matches ``worker.<id>``).
        topics: NATS patterns.
        event_types: exact CloudEvent types.
    """

    services: frozenset[str] = frozenset()
    topics: tuple[str, ...] = ()
    event_types: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        *,
        services: Iterable[str] = (),
        topics: Iterable[str] = (),
        event_types: Iterable[str] = (),
    ) -> EventFilter:
        """Build and validate a filter.

        Raises:
            TopicError: a topic pattern is malformed.
        """
        patterns = tuple(dict.fromkeys(t.strip() for t in topics if t.strip()))
        for pattern in patterns:
            validate_pattern(pattern)
        return cls(
            frozenset(s for s in services if s), patterns, frozenset(t for t in event_types if t)
        )

    @property
    def patterns(self) -> tuple[str, ...]:
        """The bus patterns that cover this filter (``>`` when no topic is named)."""
        return self.topics or (">",)

    def accepts(self, topic: str, envelope: Envelope) -> bool:
        if self.event_types and envelope.type not in self.event_types:
            return False
        if self.topics and not any(matches(p, topic) for p in self.topics):
            return False
        if self.services:
            origin = service_of_source(envelope.source)
            if not any(origin == s or origin.startswith(s + ".") for s in self.services):
                return False
        return True


@dataclass(eq=False)
class Listener:
    """One stream's queue of ``(topic, envelope)``; `None` in the queue ends the stream."""

    filter: EventFilter
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    maxsize: int = DEFAULT_QUEUE_SIZE
    queue: asyncio.Queue[tuple[str, Envelope] | None] = field(default_factory=asyncio.Queue)
    dropped: int = 0
    delivered: int = 0
    last_activity: float = field(default_factory=time.monotonic)
    closed: bool = False
    _seen: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)

    def offer(self, topic: str, envelope: Envelope, *, dedupe: bool = False) -> None:
        """Queue an event (dropping the oldest when full)."""
        if self.closed:
            return
        if dedupe:
            key = (envelope.source, envelope.id)
            if key in self._seen:
                return
            self._seen[key] = None
            if len(self._seen) > _DEDUP:
                self._seen.popitem(last=False)
        if self.queue.qsize() >= self.maxsize:
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait((topic, envelope))

    def close(self) -> None:
        """End the stream after what is queued."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(_CLOSED)

    async def next(self) -> tuple[str, Envelope] | None:
        """The next event, or None once closed."""
        item = await self.queue.get()
        if item is None:
            self.closed = True
        else:
            self.delivered += 1
            self.last_activity = time.monotonic()
        return item


@dataclass(eq=False)
class _Shared:
    subscription: Subscription | None = None
    listeners: list[Listener] = field(default_factory=list)


class EventHub:
    """Shared bus subscriptions feeding `Listener`s.

    Example:
        >>> listener = await hub.listen(EventFilter.of(topics=["workmanager.lifecycle"]))
        ... # doctest: +SKIP
    """

    def __init__(self, bus: EventBus, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._bus = bus
        self._queue_size = queue_size
        self._shared: dict[str, _Shared] = {}
        self._grouped: dict[str, Subscription] = {}
        self._listeners: dict[str, Listener] = {}
        self._lock = asyncio.Lock()
        self._ids = itertools.count()

    @property
    def listeners(self) -> dict[str, Listener]:
        return self._listeners

    @property
    def bus_subscriptions(self) -> int:
        return sum(1 for s in self._shared.values() if s.subscription is not None) + len(
            self._grouped
        )

    async def listen(self, event_filter: EventFilter, *, group: str | None = None) -> Listener:
        """A new listener; returns once the bus delivers to it.

        With `group`, the listener competes with every other member of the group (across
        gateways) for the events of its single topic pattern.

        Raises:
            BusError: the broker refused the subscription.
        """
        listener = Listener(event_filter, maxsize=self._queue_size)
        if group is not None:
            (pattern,) = event_filter.patterns[:1]

            async def deliver(envelope: Envelope, delivery: Delivery) -> None:
                if event_filter.accepts(delivery.topic, envelope):
                    listener.offer(delivery.topic, envelope)

            self._grouped[listener.id] = await self._bus.subscribe(pattern, deliver, group=group)
            self._listeners[listener.id] = listener
            return listener
        async with self._lock:
            try:
                for pattern in event_filter.patterns:
                    shared = self._shared.get(pattern)
                    if shared is None:
                        shared = _Shared()
                        shared.subscription = await self._bus.subscribe(
                            pattern, self._dispatcher(pattern, shared)
                        )
                        self._shared[pattern] = shared
                    shared.listeners.append(listener)
            except BaseException:
                # A refused pattern: leave no trace (the earlier patterns' shares back).
                listener.close()
                await self._detach(listener)
                raise
        self._listeners[listener.id] = listener
        return listener

    def _dispatcher(self, pattern: str, shared: _Shared) -> AsyncHandler:
        async def dispatch(envelope: Envelope, delivery: Delivery) -> None:
            topic = delivery.topic
            for listener in shared.listeners:
                if listener.filter.accepts(topic, envelope):
                    listener.offer(topic, envelope, dedupe=len(listener.filter.patterns) > 1)

        return dispatch

    async def release(self, listener: Listener) -> None:
        """Forget `listener`; unsubscribe patterns nobody listens to any more."""
        listener.close()
        self._listeners.pop(listener.id, None)
        grouped = self._grouped.pop(listener.id, None)
        if grouped is not None:
            await grouped.unsubscribe()
            return
        async with self._lock:
            await self._detach(listener)

    async def _detach(self, listener: Listener) -> None:
        """Take `listener` off its shared patterns (under the lock); unsubscribe unused ones."""
        for pattern in listener.filter.patterns:
            shared = self._shared.get(pattern)
            if shared is None or listener not in shared.listeners:
                continue
            shared.listeners.remove(listener)
            if not shared.listeners:
                del self._shared[pattern]
                if shared.subscription is not None:
                    await shared.subscription.unsubscribe()

    def close_all(self) -> None:
        """End every stream (graceful shutdown)."""
        for listener in list(self._listeners.values()):
            listener.close()

    async def close(self) -> None:
        self.close_all()
        for listener in list(self._listeners.values()):
            await self.release(listener)
