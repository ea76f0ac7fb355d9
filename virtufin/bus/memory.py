"""The in-process bus: the embedded default. Zero-copy (handlers get the publisher's frozen
`Envelope`), deterministic order, no server.

Two ways to drive it:

- `publish` / `subscribe` (async): each subscription has a queue and a task, so a slow or
  failing handler never blocks the publisher; failures are redelivered at once, before the
  member's next event, then dead-lettered. Each member handles its events in publish order;
  an ``ordered`` group hands every event to one member (the first still subscribed), so the
  whole group sees them in order. Nothing survives the process.
- `publish_sync` / `subscribe_sync`: synchronous, breadth-first dispatch in publish order for
  backtests: an event published from inside a handler is delivered after the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from virtufin import topics
from virtufin.bus.port import (
    DEFAULT_MAX_DELIVERIES,
    AsyncHandler,
    Delivery,
    EventBus,
    Subscription,
    dead_letter_envelope,
)
from virtufin.bus.validation import LaneValidator
from virtufin.envelope import Envelope
from virtufin.lanes import matches, overlaps, validate_pattern

__all__ = ["MemoryBus", "SyncHandler"]

log = logging.getLogger(__name__)
SyncHandler = Callable[[Envelope, Delivery], None]
_DEDUP_WINDOW: Final = 100_000


@dataclass(eq=False)
class _Member:
    handler: AsyncHandler | SyncHandler
    is_async: bool
    max_deliveries: int
    inbox: _Inbox | None = None
    task: asyncio.Task[None] | None = None
    stopped: bool = False
    current: tuple[str, Envelope, Delivery] | None = None
    """The event an async member's handler is working on (handed over if it leaves)."""


class _Inbox:
    """An async member's queue: a deque plus a wake-up future, cheaper than `asyncio.Queue`
    (no per-event coroutine or getter bookkeeping); `join` waits for handled, not taken."""

    __slots__ = ("_idle", "_items", "_unfinished", "_waiter")

    def __init__(self) -> None:
        self._items: deque[tuple[str, Envelope, Delivery]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._idle: asyncio.Future[None] | None = None
        self._unfinished = 0

    def put(self, item: tuple[str, Envelope, Delivery]) -> None:
        self._items.append(item)
        self._unfinished += 1
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> deque[tuple[str, Envelope, Delivery]]:
        """The items, once there is at least one (the caller pops them and calls `done`)."""
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            await waiter
        return self._items

    def take_all(self) -> list[tuple[str, Envelope, Delivery]]:
        """Remove and return every waiting item (they count as done here)."""
        items = list(self._items)
        self._items.clear()
        for _ in items:
            self.done()
        return items

    def done(self) -> None:
        self._unfinished -= 1
        if self._unfinished == 0 and self._idle is not None:
            idle, self._idle = self._idle, None
            if not idle.done():
                idle.set_result(None)

    async def join(self) -> None:
        while self._unfinished:
            if self._idle is None:
                self._idle = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._idle)


@dataclass(eq=False)
class _Group:
    """One logical subscriber: a pattern and a group; members compete for its events."""

    pattern: str
    name: str | None
    members: list[_Member] = field(default_factory=list)
    cursor: itertools.count[int] = field(default_factory=itertools.count)
    ordered: bool = False

    def pick(self) -> _Member:
        members = self.members
        if len(members) == 1 or self.ordered:
            return members[0]
        return members[next(self.cursor) % len(members)]


class _Route(NamedTuple):
    """One group a topic reaches, with what the fast path needs resolved in advance."""

    group: _Group
    first: Delivery
    """The first attempt's `Delivery` (immutable, so shared by every event)."""
    direct: SyncHandler | None
    """The handler when the group is one sync member (called inline without a pick)."""
    member: _Member | None


class _MemorySubscription(Subscription):
    def __init__(self, bus: MemoryBus, group: _Group, member: _Member) -> None:
        self.pattern = group.pattern
        self.group = group.name
        self._bus = bus
        self._entry = group
        self._member = member

    async def unsubscribe(self) -> None:
        """Stop deliveries; what the member had taken but not handled goes to its group."""
        self.unsubscribe_sync()
        task = self._member.task
        if task is None or task is asyncio.current_task():
            return  # from its own handler: `_consume` hands over and ends after this event
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._bus._hand_over(self._entry, self._member)

    def unsubscribe_sync(self) -> None:
        self._member.stopped = True
        self._bus._remove(self._entry, self._member)


class MemoryBus(EventBus):
    """In-process adapter of the bus port.

    Args:
        validator: lane rules checked on publish (default: topic rules, no registry).
        dedup_window: how many recent (source, id) pairs at least are remembered for
            de-duplication (two generations of this size: between one and two windows).
    """

    name = "memory"

    def __init__(
        self, *, validator: LaneValidator | None = None, dedup_window: int = _DEDUP_WINDOW
    ) -> None:
        if dedup_window < 1:
            raise ValueError(f"dedup_window must be at least 1 ({dedup_window})")
        self.validator = validator if validator is not None else LaneValidator()
        self._groups: list[_Group] = []
        self._route_cache: dict[str, tuple[_Route, ...]] = {}
        self._removals = 0  # bumped by `_remove`: a dispatch loop re-checks its routes
        # Ids seen per source, in two generations: no key tuple to allocate per event.
        self._seen: dict[str, set[str]] = {}
        self._seen_before: dict[str, set[str]] = {}
        self._seen_count = 0
        self._dedup_window = dedup_window
        self._pending: deque[tuple[str, Envelope]] = deque()
        self._dispatching = False
        self.dead_letters = 0

    # ---------------------------------------------------------------- routing

    def _routes(self, topic: str) -> tuple[_Route, ...]:
        routes = self._route_cache.get(topic)
        if routes is None:
            routes = tuple(
                self._route(g, topic)
                for g in self._groups
                if g.members and matches(g.pattern, topic)
            )
            self._route_cache[topic] = routes
        return routes

    @staticmethod
    def _route(group: _Group, topic: str) -> _Route:
        first = Delivery(topic, 1, group.name)
        if len(group.members) == 1:
            member = group.members[0]
            if not member.is_async:
                return _Route(group, first, member.handler, member)  # type: ignore[arg-type]
        return _Route(group, first, None, None)

    def has_subscribers(self, topic: str) -> bool:
        """Whether an event published on `topic` now would reach anybody (a dictionary look-up
        once the topic is routed): a publisher may skip building an event nobody receives."""
        routes = self._route_cache.get(topic)
        if routes is None:
            routes = self._routes(topic)
        return bool(routes)

    def subscribed(self, pattern: str) -> bool:
        """Whether any current subscription could receive an event published on a topic
        `pattern` matches (a publisher may skip building events nobody can see)."""
        return any(g.members and overlaps(g.pattern, pattern) for g in self._groups)

    def _add(
        self, pattern: str, group: str | None, member: _Member, *, ordered: bool = False
    ) -> _Group:
        validate_pattern(pattern)
        entry = next(
            (
                g
                for g in self._groups
                if group is not None and (g.pattern, g.name) == (pattern, group)
            ),
            None,
        )
        if entry is None:
            entry = _Group(pattern, group)
            self._groups.append(entry)
        entry.ordered = ordered or entry.ordered
        entry.members.append(member)
        self._route_cache.clear()
        return entry

    def _remove(self, group: _Group, member: _Member) -> None:
        if member in group.members:
            group.members.remove(member)
        if not group.members and group in self._groups:
            self._groups.remove(group)
        self._route_cache.clear()
        self._removals += 1

    @staticmethod
    def _still_routed(route: _Route) -> bool:
        """Whether a route resolved before an unsubscribe still reaches anybody."""
        members = route.group.members
        return bool(members) and (route.member is None or route.member in members)

    def _hand_over(self, group: _Group, member: _Member) -> None:
        """Give the events a leaving async member had taken (the one in hand first) to the
        rest of its group, in order; with nobody left they go with the subscription."""
        inbox = member.inbox
        if inbox is None:
            return
        items = inbox.take_all()
        if member.current is not None:
            items.insert(0, member.current)
            member.current = None
            inbox.done()
        for topic, envelope, delivery in items:
            if group.members:
                self._deliver(_Route(group, delivery, None, None), topic, envelope)

    def _is_duplicate(self, envelope: Envelope) -> bool:
        ident = envelope.id
        ids = self._seen.get(envelope.source)
        if ids is None:
            ids = self._seen[envelope.source] = set()
        elif ident in ids:
            return True
        older = self._seen_before.get(envelope.source)
        if older is not None and ident in older:
            return True
        ids.add(ident)
        self._seen_count += 1
        if self._seen_count >= self._dedup_window:
            self._seen_before, self._seen, self._seen_count = self._seen, {}, 0
        return False

    # ---------------------------------------------------------------- async API

    async def publish(self, topic: str, envelope: Envelope) -> None:
        await self.validator.check(topic, envelope)
        if self._is_duplicate(envelope):
            return
        self.publish_trusted(topic, envelope)

    async def subscribe(
        self,
        pattern: str,
        handler: AsyncHandler,
        *,
        group: str | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        ordered: bool = False,
    ) -> Subscription:
        member = _Member(handler, True, max_deliveries, inbox=_Inbox())
        entry = self._add(pattern, group, member, ordered=ordered)
        member.task = asyncio.create_task(self._consume(entry, member), name=f"bus:{pattern}")
        return _MemorySubscription(self, entry, member)

    async def _consume(self, group: _Group, member: _Member) -> None:
        inbox = member.inbox
        assert inbox is not None
        handler: AsyncHandler = member.handler  # type: ignore[assignment]
        while not member.stopped:
            items = await inbox.wait()
            while items and not member.stopped:
                item = member.current = items.popleft()
                topic, envelope, first = item
                try:
                    await handler(envelope, first)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._redeliver_async(group, member, topic, envelope, exc)
                member.current = None
                inbox.done()
        self._hand_over(group, member)  # unsubscribed from its own handler

    async def _redeliver_async(
        self, group: _Group, member: _Member, topic: str, envelope: Envelope, exc: Exception
    ) -> None:
        handler: AsyncHandler = member.handler  # type: ignore[assignment]
        for attempt in range(2, member.max_deliveries + 1):
            try:
                await handler(envelope, Delivery(topic, attempt, group.name))
                return
            except asyncio.CancelledError:
                raise
            except Exception as again:
                exc = again
        await self._dead_letter(envelope, topic, exc, member.max_deliveries, group.name)

    async def _dead_letter(
        self, envelope: Envelope, topic: str, exc: BaseException, attempts: int, group: str | None
    ) -> None:
        self._dead_letter_sync(envelope, topic, exc, attempts, group)
        if not self._dispatching:
            self._run_pending()

    def _dead_letter_sync(
        self, envelope: Envelope, topic: str, exc: BaseException, attempts: int, group: str | None
    ) -> None:
        """Count, log and queue the dead letter (delivered by the dispatch loop)."""
        self.dead_letters += 1
        reason = f"{type(exc).__name__}: {exc}"
        log.warning(
            "dead-lettering %s from %s after %d attempts: %s", envelope.id, topic, attempts, reason
        )
        if topic != topics.DEAD_LETTER:
            dead = dead_letter_envelope(
                envelope, topic=topic, reason=reason, attempts=attempts, group=group
            )
            self._pending.append((topics.DEAD_LETTER, dead))

    async def drain(self) -> None:
        """Wait until every queued event has been handled (tests and graceful shutdown)."""
        for group in list(self._groups):
            for member in list(group.members):
                if member.inbox is not None:
                    await member.inbox.join()

    async def close(self) -> None:
        for group in list(self._groups):
            for member in list(group.members):
                if member.task is not None:
                    member.task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await member.task
        self._groups.clear()
        self._route_cache.clear()

    # ---------------------------------------------------------------- sync API

    def subscribe_sync(
        self,
        pattern: str,
        handler: SyncHandler,
        *,
        group: str | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
    ) -> _MemorySubscription:
        """Subscribe a plain function, called inline by `publish_sync` (and by `publish`)."""
        member = _Member(handler, False, max_deliveries)
        entry = self._add(pattern, group, member)
        return _MemorySubscription(self, entry, member)

    def publish_sync(self, topic: str, envelope: Envelope, *, validate: bool = True) -> None:
        """Deliver synchronously to sync subscribers, breadth-first, in publish order.

        Args:
            validate: check lane rules (a backtest that validated its lanes once may skip).
        """
        if validate:
            self.validator.check_sync(topic, envelope)
        if self._is_duplicate(envelope):
            return
        self.publish_trusted(topic, envelope)

    def publish_trusted(self, topic: str, envelope: Envelope) -> None:
        """`publish_sync` for a publisher that has validated the topic's lanes and whose ids
        are unique by construction (the backtest replay: ``<runid>-bar-<n>``): the lane and
        de-duplication checks would find nothing, so they are not repeated per event.

        Delivers the event (or queues it behind the one being delivered), then whatever its
        handlers published, breadth-first. The dispatch is inlined here, not a second call:
        this is the once-per-bar path of a backtest."""
        if self._dispatching:
            self._pending.append((topic, envelope))
            return
        self._dispatching = True
        try:
            routes = self._route_cache.get(topic)
            if routes is None:
                routes = self._routes(topic)
            removals = self._removals
            for route in routes:
                if removals != self._removals and not self._still_routed(route):
                    continue  # a handler of this event unsubscribed it
                direct = route.direct
                if direct is not None:
                    try:
                        direct(envelope, route.first)
                    except Exception as exc:
                        self._redeliver_sync(route, route.member, topic, envelope, exc)  # type: ignore[arg-type]
                else:
                    self._deliver(route, topic, envelope)
            if self._pending:
                self._drain_pending()
        finally:
            self._dispatching = False

    def _run_pending(self) -> None:
        self._dispatching = True
        try:
            self._drain_pending()
        finally:
            self._dispatching = False

    def _drain_pending(self) -> None:
        pending = self._pending
        while pending:
            topic, envelope = pending.popleft()
            removals = self._removals
            for route in self._routes(topic):
                if removals != self._removals and not self._still_routed(route):
                    continue  # a handler of this event unsubscribed it
                direct = route.direct  # one sync member: called inline, as `publish_trusted`
                if direct is not None:
                    try:
                        direct(envelope, route.first)
                    except Exception as exc:
                        self._redeliver_sync(route, route.member, topic, envelope, exc)  # type: ignore[arg-type]
                else:
                    self._deliver(route, topic, envelope)

    def _deliver(self, route: _Route, topic: str, envelope: Envelope) -> None:
        member = route.group.pick()
        inbox = member.inbox
        if inbox is not None:
            inbox.put((topic, envelope, route.first))
            return
        handler: SyncHandler = member.handler  # type: ignore[assignment]
        try:
            handler(envelope, route.first)
        except Exception as exc:
            self._redeliver_sync(route, member, topic, envelope, exc)

    def _redeliver_sync(
        self, route: _Route, member: _Member, topic: str, envelope: Envelope, exc: Exception
    ) -> None:
        handler: SyncHandler = member.handler  # type: ignore[assignment]
        group = route.group
        for attempt in range(2, member.max_deliveries + 1):
            try:
                handler(envelope, Delivery(topic, attempt, group.name))
                return
            except Exception as again:
                exc = again
        self._dead_letter_sync(envelope, topic, exc, member.max_deliveries, group.name)
