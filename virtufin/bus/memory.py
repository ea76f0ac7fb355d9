"""The in-process bus: the embedded default. Zero-copy (handlers get the publisher's frozen
`Envelope`), deterministic order, no server.

Two ways to drive it:

- `publish` / `subscribe` (async): each subscription has a queue and a task, so a slow or
  failing handler never blocks the publisher; failures are redelivered, then dead-lettered.
- `publish_sync` / `subscribe_sync`: synchronous, breadth-first dispatch in publish order for
  backtests: an event published from inside a handler is delivered after the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

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
from virtufin.lanes import matches, validate_pattern

__all__ = ["MemoryBus", "SyncHandler"]

log = logging.getLogger(__name__)
SyncHandler = Callable[[Envelope, Delivery], None]
_DEDUP_WINDOW: Final = 100_000


@dataclass(eq=False)
class _Member:
    handler: AsyncHandler | SyncHandler
    is_async: bool
    max_deliveries: int
    queue: asyncio.Queue[tuple[str, Envelope]] | None = None
    task: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Group:
    """One logical subscriber: a pattern and a group; members compete for its events."""

    pattern: str
    name: str | None
    members: list[_Member] = field(default_factory=list)
    cursor: itertools.count[int] = field(default_factory=itertools.count)

    def pick(self) -> _Member:
        return self.members[next(self.cursor) % len(self.members)]


class _MemorySubscription(Subscription):
    def __init__(self, bus: MemoryBus, group: _Group, member: _Member) -> None:
        self.pattern = group.pattern
        self.group = group.name
        self._bus = bus
        self._entry = group
        self._member = member

    async def unsubscribe(self) -> None:
        self.unsubscribe_sync()
        task = self._member.task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def unsubscribe_sync(self) -> None:
        self._bus._remove(self._entry, self._member)


class MemoryBus(EventBus):
    """In-process adapter of the bus port.

    Args:
        validator: lane rules checked on publish (default: topic rules, no registry).
        dedup_window: how many recent (source, id) pairs are remembered for de-duplication.
    """

    name = "memory"

    def __init__(
        self, *, validator: LaneValidator | None = None, dedup_window: int = _DEDUP_WINDOW
    ) -> None:
        self.validator = validator if validator is not None else LaneValidator()
        self._groups: list[_Group] = []
        self._route_cache: dict[str, list[_Group]] = {}
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._dedup_window = dedup_window
        self._pending: deque[tuple[str, Envelope]] = deque()
        self._dispatching = False
        self.dead_letters = 0

    # ---------------------------------------------------------------- routing

    def _routes(self, topic: str) -> list[_Group]:
        routes = self._route_cache.get(topic)
        if routes is None:
            routes = [g for g in self._groups if g.members and matches(g.pattern, topic)]
            self._route_cache[topic] = routes
        return routes

    def _add(self, pattern: str, group: str | None, member: _Member) -> _Group:
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
        entry.members.append(member)
        self._route_cache.clear()
        return entry

    def _remove(self, group: _Group, member: _Member) -> None:
        if member in group.members:
            group.members.remove(member)
        if not group.members and group in self._groups:
            self._groups.remove(group)
        self._route_cache.clear()

    def _is_duplicate(self, envelope: Envelope) -> bool:
        key = (envelope.source, envelope.id)
        if key in self._seen:
            return True
        self._seen[key] = None
        if len(self._seen) > self._dedup_window:
            self._seen.popitem(last=False)
        return False

    # ---------------------------------------------------------------- async API

    async def publish(self, topic: str, envelope: Envelope) -> None:
        await self.validator.check(topic, envelope)
        if self._is_duplicate(envelope):
            return
        self._pending.append((topic, envelope))
        if not self._dispatching:
            self._run_pending()

    async def subscribe(
        self,
        pattern: str,
        handler: AsyncHandler,
        *,
        group: str | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
    ) -> Subscription:
        member = _Member(handler, True, max_deliveries, queue=asyncio.Queue())
        entry = self._add(pattern, group, member)
        member.task = asyncio.create_task(self._consume(entry, member), name=f"bus:{pattern}")
        return _MemorySubscription(self, entry, member)

    async def _consume(self, group: _Group, member: _Member) -> None:
        assert member.queue is not None
        while True:
            topic, envelope = await member.queue.get()
            for attempt in range(1, member.max_deliveries + 1):
                try:
                    await member.handler(envelope, Delivery(topic, attempt, group.name))  # type: ignore[misc]
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if attempt == member.max_deliveries:
                        await self._dead_letter(envelope, topic, exc, attempt, group.name)
            member.queue.task_done()

    async def _dead_letter(
        self, envelope: Envelope, topic: str, exc: BaseException, attempts: int, group: str | None
    ) -> None:
        self.dead_letters += 1
        reason = f"{type(exc).__name__}: {exc}"
        log.warning(
            "dead-lettering %s from %s after %d attempts: %s", envelope.id, topic, attempts, reason
        )
        dead = dead_letter_envelope(
            envelope, topic=topic, reason=reason, attempts=attempts, group=group
        )
        if topic != topics.DEAD_LETTER:
            self._pending.append((topics.DEAD_LETTER, dead))
            if not self._dispatching:
                self._run_pending()

    async def drain(self) -> None:
        """Wait until every queued event has been handled (tests and graceful shutdown)."""
        for group in list(self._groups):
            for member in list(group.members):
                if member.queue is not None:
                    await member.queue.join()

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
        self._pending.append((topic, envelope))
        if not self._dispatching:
            self._run_pending()

    def _run_pending(self) -> None:
        self._dispatching = True
        try:
            pending = self._pending
            while pending:
                t, ev = pending.popleft()
                for group in self._routes(t):
                    member = group.pick()
                    if member.queue is not None:
                        member.queue.put_nowait((t, ev))
                    else:
                        self._deliver_sync(group, member, t, ev)
        finally:
            self._dispatching = False

    def _deliver_sync(self, group: _Group, member: _Member, topic: str, envelope: Envelope) -> None:
        handler: SyncHandler = member.handler  # type: ignore[assignment]
        for attempt in range(1, member.max_deliveries + 1):
            try:
                handler(envelope, Delivery(topic, attempt, group.name))
                return
            except Exception as exc:
                if attempt == member.max_deliveries:
                    self.dead_letters += 1
                    reason = f"{type(exc).__name__}: {exc}"
                    log.warning("dead-lettering %s from %s: %s", envelope.id, topic, reason)
                    if topic != topics.DEAD_LETTER:
                        dead = dead_letter_envelope(
                            envelope, topic=topic, reason=reason, attempts=attempt, group=group.name
                        )
                        self._pending.append((topics.DEAD_LETTER, dead))
