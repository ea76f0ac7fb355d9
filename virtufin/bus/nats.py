"""The NATS JetStream adapter of the bus port (the only module that imports nats-py).

Why it is built the way it is:

- **Streams per family**, named ``<prefix>_ACT|HYP|SC|INFRA`` with subjects ``act.>``,
  ``hyp.>``, ``sc.>`` and, for infrastructure topics, ``<service>.>`` per service plus
  single-token topics (``state-changes``). This is the layout `virtufin.deploy.streams`
  renders for Kubernetes, so a bus and a stream-creation job never fight over a config.
  Category subjects such as ``*.lifecycle`` cannot be used: JetStream refuses them because
  they overlap ``act.>`` (``act.lifecycle``). The INFRA stream therefore learns services as
  they appear: a publish to, or a subscription on, ``<service>.…`` adds ``<service>.>`` to
  the stream (union only, never removing a subject someone else added).
- **Publish** validates lanes, encodes structured JSON and waits for JetStream's ack, with
  ``Nats-Msg-Id: <source>|<id>`` so that the server drops duplicates within the stream's
  duplicate window. Because of that header a publish can be retried blindly while the
  connection is being re-established: a publish returns only once the event is stored.
- **Subscribe** is a pull consumer per (stream, filter) driven by our own pull loop (batched
  requests with idle heartbeats) instead of nats-py's `fetch`, which waits for a whole batch
  and so adds up to its timeout of latency to a trickle of events. Members of a `group` share
  one durable consumer; a subscription without a group gets its own consumer, deleted on
  unsubscribe and reaped by the server (``inactive_threshold``) if the process dies.
  A pattern starting with a wildcard (``*.lifecycle``, ``>``) reads the whole INFRA stream
  and matches here: the server accepts only filters inside one stream subject, and services
  join the INFRA stream over time. A handler busy for a third of the ack wait is reported
  in progress (``+WPI``), and slow handlers get smaller batches, so that waiting events are
  not redelivered to a competing member meanwhile.
- **Redelivery and dead letters are enforced here, not by the server's ``max_deliver``**
  (consumers use ``max_deliver=-1``): with a server-side cap, an event whose final attempt
  failed *and* whose dead-lettering failed (broker briefly away) would never be delivered
  again: silently dropped. Here a failed attempt is nak'ed with backoff; the attempt that
  reaches `max_deliveries` publishes to ``bus.deadletter`` and only then terminates the
  original; an event seen again past its last attempt is dead-lettered without calling the
  handler (the consumer crashed while handling it).
- **De-duplication on the consumer side** by (source, id) in a bounded LRU, recorded only
  after the handler succeeded: a redelivery after a crash is processed (at least once),
  a duplicate of an event already handled here is acked and skipped. Dead letters keep
  their event's pair and are told apart by topic and group (`dedup_key`).
- **Acks are batched** (unordered subscriptions): a handled event's ack joins the others and
  they go out in one socket write after at most 10 ms (`_AckBatch`), instead of a write and a
  flusher wake-up per event, which cost as much as handling a small event. Nobody waits for
  an ack but the server's bookkeeping; a crash in between redelivers, as any crash before an
  ack does.
- **Ordered subscriptions** (``ordered=True``) get a consumer with ``max_ack_pending=1``: the
  server hands out the next event only once the previous one was acked or terminated, so a
  failed event (nak'ed with backoff) and an event held by a member that died are delivered
  again *before* anything newer. A dead member's event comes back after the consumer's ack
  wait, which for ordered consumers is `ordered_ack_wait_seconds` (5 s; handlers busy longer
  than a third of it are reported in progress). An existing durable is updated in place
  (JetStream allows changing ``max_ack_pending`` and ``ack_wait``), so a group switched to
  ordered keeps its position; if the server cannot make it ordered, `subscribe` fails.
- **Publishing waits as little as possible**: the acknowledgement of a publish is a reply to
  one wildcard inbox of this bus (no per-request subscription or timer; a sweeper fails waits
  past their deadline), and `publish_many` writes several events back to back before waiting
  for all their acknowledgements (one socket write, one wake-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from virtufin import topics
from virtufin.bus.port import (
    DEFAULT_MAX_DELIVERIES,
    AsyncHandler,
    Delivery,
    EventBus,
    Subscription,
    dead_letter_envelope,
    dedup_key,
)
from virtufin.bus.validation import LaneValidator
from virtufin.envelope import MAX_ENVELOPE_BYTES, Envelope, decode, encode
from virtufin.errors import BusError, EnvelopeError, PublishRejectedError
from virtufin.lanes import matches, validate_pattern

__all__ = [
    "DEFAULT_NATS_URL",
    "NatsBus",
    "consumer_name",
    "intersect",
    "stream_subject_for",
]

log = logging.getLogger(__name__)

DEFAULT_NATS_URL: Final = "nats://127.0.0.1:4222"
_DAY: Final = 86_400.0
#: family → (stream suffix, lane subject or None for INFRA, default max age in seconds).
#: Ages match `virtufin.deploy.streams`.
_FAMILIES: Final[tuple[tuple[str, str, str | None, float], ...]] = (
    ("act", "ACT", "act.>", 7 * _DAY),
    ("hyp", "HYP", "hyp.>", _DAY),
    ("sc", "SC", "sc.>", 30 * _DAY),
    ("infra", "INFRA", None, 7 * _DAY),
)
_LANE_HEADS: Final = frozenset({"act", "hyp", "sc"})
#: Fewest tokens a valid topic of each lane family has (lanes.parse).
_LANE_MIN_TOKENS: Final = {"act": 5, "hyp": 6, "sc": 5}
_INFRA_BASE_SUBJECTS: Final = ("bus.>", topics.STATE_CHANGES)
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_UNSAFE_RE: Final = re.compile(r"[^A-Za-z0-9_-]")
_DENIED_RE: Final = re.compile(r"Permissions Violation for Publish to \"?([^\"'\s]+)", re.I)
_JS_API: Final = "$JS.API"
_HEARTBEAT_SECONDS: Final = 1.0
_PULL_EXPIRES_SECONDS: Final = 15.0
_STALL_SECONDS: Final = 1.5 * _HEARTBEAT_SECONDS
_DEAD_LETTER_KEEP_BYTES: Final = 64 * 1024
#: How often publish waits are checked against their deadline.
_ACK_SWEEP_SECONDS: Final = 0.05
#: How long `publish_many` waits for a first acknowledgement before retrying one by one.
_FIRST_ACK_SECONDS: Final = 2.0
#: Acknowledgements of unordered subscriptions are written together: when this many wait, or
#: when the oldest has waited this long (see `_AckBatch`).
_ACK_BATCH: Final = 64
_ACK_DELAY_SECONDS: Final = 0.01


# --------------------------------------------------------------------------- subjects


def intersect(a: str, b: str) -> str | None:
    """The NATS pattern matching exactly the subjects both `a` and `b` match, or None.

    Example:
        >>> intersect(">", "sc.>"), intersect("*.b.>", "a.>"), intersect("a.b", "a.c")
        ('sc.>', 'a.b.>', None)
    """
    at, bt = a.split("."), b.split(".")
    out: list[str] = []
    for i in range(max(len(at), len(bt))):
        if i >= len(at) or i >= len(bt):
            return None
        x, y = at[i], bt[i]
        if x == ">":
            return ".".join(out + bt[i:])
        if y == ">":
            return ".".join(out + at[i:])
        if x == "*":
            out.append(y)
        elif y in ("*", x):
            out.append(x)
        else:
            return None
    return ".".join(out)


def stream_subject_for(topic_or_pattern: str) -> str | None:
    """The INFRA stream subject that captures an infrastructure topic or pattern.

    ``<service>.<category>…`` → ``<service>.>``; a single token → itself; None for lane
    families and for patterns whose first token is a wildcard.
    """
    head, _, rest = topic_or_pattern.partition(".")
    if head in _LANE_HEADS or head in ("*", ">"):
        return None
    return f"{head}.>" if rest else head


def consumer_name(
    prefix: str, pattern: str, group: str | None, filter_subject: str, *, unique: str = ""
) -> str:
    """A legal, stable JetStream consumer name for (prefix, pattern, group, filter).

    Readable part first (NATS names may not hold ``.``, ``*``, ``>`` or whitespace), then a
    hash of the exact inputs so that sanitising can never make two subscriptions collide.
    """
    readable = _UNSAFE_RE.sub("_", f"{prefix}-{group or 'fanout'}-{pattern}")[:48]
    key = "\0".join((prefix, pattern, group or "", filter_subject, unique))
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    """Fail a publish wait; marked retrieved, so a wait whose publisher was cancelled meanwhile
    logs no "exception never retrieved" (an awaiting publisher still gets it)."""
    if not future.done():
        future.set_exception(exc)
        future.exception()


def _delivered(msg: Msg) -> int:
    """How often JetStream delivered `msg` (this time included): nats-py's
    ``msg.metadata.num_delivered`` without building the whole metadata (per event)."""
    tokens = msg.reply.split(".")
    if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":  # v1 ack subject
        return int(tokens[4])
    return int(msg.metadata.num_delivered)  # v2 (domain, account hash) and the checks


def _covers(subjects: Iterable[str], subject: str) -> bool:
    """Whether one of `subjects` already captures everything `subject` matches."""
    return any(intersect(s, subject) == subject for s in subjects)


# --------------------------------------------------------------------------- helpers


class _SeenCache:
    """Bounded LRU of (source, id) pairs already handled successfully."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, key: tuple[str, str]) -> bool:
        if key in self._items:
            self._items.move_to_end(key)
            return True
        return False

    def add(self, key: tuple[str, str]) -> None:
        self._items[key] = None
        if len(self._items) > self._capacity:
            self._items.popitem(last=False)


class _AckBatch:
    """Acknowledgements of handled events, written to the server together.

    Acking is not on anyone's latency path (only the server's bookkeeping waits for it), but
    one ack per event costs a wake-up of nats-py's flusher and a socket write in this process
    and a read in the server: at a thousand events a second, as much as handling them. Acks
    of unordered subscriptions therefore collect here and go out in one write when
    `_ACK_BATCH` wait or the oldest has waited `_ACK_DELAY_SECONDS` (well within any ack
    wait; ordered subscriptions, whose next event waits for the ack, ack at once). A process
    that dies meanwhile gets those events redelivered, as for any crash between handling
    and acking (at least once); stopping a subscription or the bus writes them first.
    """

    def __init__(self, bus: NatsBus) -> None:
        self._bus = bus
        self._msgs: list[Msg] = []
        self._timer: asyncio.TimerHandle | None = None

    async def add(self, msg: Msg) -> None:
        self._msgs.append(msg)
        if len(self._msgs) >= _ACK_BATCH:
            await self.flush()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(_ACK_DELAY_SECONDS, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._msgs:
            self._bus._spawn(self.flush())

    async def flush(self) -> None:
        """Write every collected ack (one socket write: nats-py's flusher runs after us)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        msgs, self._msgs = self._msgs, []
        for index, msg in enumerate(msgs):
            try:
                await msg.ack()
            except nats.errors.Error as exc:  # the connection is gone: all are redelivered
                log.info("could not ack %d handled events: %r", len(msgs) - index, exc)
                return


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a subscription reads from: one stream, one server-side filter."""

    stream: str
    filter_subject: str | None
    client_filter: bool  # the filter is wider than the pattern: match each message here


class _Client(Client):  # type: ignore[misc]  # nats-py is untyped here
    """nats-py's client, resolving publish acknowledgements as they are read.

    nats-py hands every message of a subscription to that subscription's task through a
    queue; for an acknowledgement (one per publish) that is a task switch and a wake-up just
    to set a future. Messages to `ack_sid` go to `on_ack` from the read loop instead; if
    nats-py ever stops calling `_process_msg`, they take the ordinary way (the subscription's
    callback is the same function).
    """

    ack_sid: int | None = None
    on_ack: Callable[[Msg], None] | None = None

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        on_ack = self.on_ack
        if sid != self.ack_sid or on_ack is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        hdr = await self._process_headers(headers)
        on_ack(self._build_message(sid, subject, reply, data, hdr))


# --------------------------------------------------------------------------- pulling


class _Puller:
    """Feeds one subscription from one pull consumer.

    Keeps about `prefetch` messages requested: a new pull request goes out when fewer than
    half are outstanding, or when the server went quiet (no message and no idle heartbeat
    for a few seconds: a lost connection, a restarted server, a deleted consumer).
    """

    def __init__(
        self, sub: _NatsSubscription, target: _Target, consumer: str, config: ConsumerConfig
    ) -> None:
        self._sub = sub
        self._bus = sub.bus
        self.target = target
        self.consumer = consumer
        self._config = config
        self._prefetch = self._bus._prefetch
        self._ack_wait = float(config.ack_wait or self._bus._ack_wait)
        self._outstanding = 0
        self._last_heard = time.monotonic()
        self._not_before = 0.0
        self._reconnects_seen = self._bus.reconnects
        self._inbox: Any = None
        self._pump_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._current: Msg | None = None  # the message a handler is working on
        self._progress_at = 0.0  # when it started, or when JetStream last heard about it
        self._handle_seconds = 0.0  # moving average of the handler's time per event
        self.task: asyncio.Task[Any] | None = None  # nats-py's task that runs _on_msg

    async def start(self) -> None:
        await self._ensure_consumer()
        nc = self._bus._client()
        self._inbox = await nc.subscribe(
            nc.new_inbox(), cb=self._on_msg, pending_msgs_limit=max(4 * self._prefetch, 1024)
        )
        self._pump_task = asyncio.create_task(self._pump(), name=f"bus-pull:{self.consumer}")

    async def _ensure_consumer(self) -> None:
        jsm = self._bus._jetstream()
        try:
            info = await jsm.add_consumer(self.target.stream, config=self._config)
        except (TimeoutError, nats.errors.Error) as exc:
            if not isinstance(exc, nats.js.errors.BadRequestError):
                raise BusError(
                    self._sub.pattern, f"cannot create consumer {self.consumer}: {exc!r}"
                ) from exc
            # Exists with another config (e.g. another ack wait): bind to it as it is.
            try:
                info = await jsm.consumer_info(self.target.stream, self.consumer)
            except nats.js.errors.NotFoundError:
                raise BusError(
                    self._sub.pattern, f"cannot create consumer {self.consumer}: {exc.description}"
                ) from exc
            log.warning(
                "consumer %s exists with a different config; using it (%s)",
                self.consumer,
                exc.description,
            )
        config = getattr(info, "config", None)
        if config is not None and config.ack_wait:
            self._ack_wait = float(config.ack_wait)
        if self._sub.ordered and (config is None or config.max_ack_pending != 1):
            have = None if config is None else config.max_ack_pending
            raise BusError(
                self._sub.pattern,
                f"consumer {self.consumer} cannot be made ordered (max_ack_pending {have}, "
                "not 1); delete it or subscribe without ordered",
            )

    def _batch(self) -> int:
        """How many events to ask for: `prefetch`, fewer for slow handlers, so that what
        waits in this process is handled well within the ack wait (no needless redelivery)."""
        if self._handle_seconds <= 0:
            return self._prefetch
        fits = int(self._ack_wait / 2 / self._handle_seconds)
        return max(1, min(self._prefetch, fits))

    def _slow(self) -> bool:
        return self._handle_seconds > self._ack_wait / 4

    async def _request(self) -> None:
        """Ask for more messages if few are outstanding (never concurrently: no await
        between the check and the bookkeeping)."""
        now = time.monotonic()
        batch = self._batch()
        if self._stopping or now < self._not_before or self._outstanding > batch // 2:
            return
        self._outstanding += batch
        self._last_heard = now
        body = json.dumps(
            {
                "batch": batch,
                "expires": int(_PULL_EXPIRES_SECONDS * 1e9),
                "idle_heartbeat": int(_HEARTBEAT_SECONDS * 1e9),
            }
        ).encode()
        subject = f"{_JS_API}.CONSUMER.MSG.NEXT.{self.target.stream}.{self.consumer}"
        try:
            await self._bus._client().publish(subject, body, reply=self._inbox.subject)
        except nats.errors.Error as exc:  # closed or buffer full while reconnecting
            self._outstanding = 0
            self._not_before = now + 0.5
            log.debug("pull request for %s not sent: %s", self.consumer, exc)

    async def _pump(self) -> None:
        """Keeps requests flowing: after reconnects, stalls and expired requests."""
        checked_at = 0.0
        while not self._stopping:
            now = time.monotonic()
            if self._reconnects_seen != self._bus.reconnects:
                self._reconnects_seen = self._bus.reconnects
                self._outstanding = 0
            elif self._quiet(now):
                self._outstanding = 0
                if now - checked_at > _STALL_SECONDS and self._bus._connected():
                    checked_at = now
                    with contextlib.suppress(Exception):
                        await self._recreate_if_missing()
            await self._request()
            self._keep_alive(now)
            await asyncio.sleep(min(_HEARTBEAT_SECONDS / 2, self._ack_wait / 4))

    def _quiet(self, now: float) -> bool:
        """Messages are owed but nothing (not even a heartbeat) came for a while, and not
        because our own handler is busy with a backlog."""
        busy = self._current is not None or self._inbox.pending_msgs > 0
        return bool(self._outstanding) and not busy and now - self._last_heard > _STALL_SECONDS

    def _keep_alive(self, now: float) -> None:
        """A handler busy for a third of the ack wait: tell JetStream it is in progress
        (``+WPI``) so that the event is not redelivered to a competing member meanwhile."""
        msg = self._current
        if msg is not None and now - self._progress_at > self._ack_wait / 3:
            self._progress_at = now
            self._bus._spawn(msg.in_progress())

    async def _recreate_if_missing(self) -> None:
        try:
            await self._bus._jetstream().consumer_info(self.target.stream, self.consumer)
        except nats.js.errors.NotFoundError:
            log.warning("consumer %s vanished; re-creating it", self.consumer)
            await self._ensure_consumer()

    async def _on_msg(self, msg: Msg) -> None:
        if self.task is None:
            self.task = asyncio.current_task()  # nats-py runs every callback on one task
        self._last_heard = started = time.monotonic()
        if not msg.reply:  # a status message from the pull request, not an event
            await self._on_status(msg)
            return
        self._outstanding = max(0, self._outstanding - 1)
        slow = self._slow()
        if not slow and self._outstanding <= self._prefetch // 2:
            await self._request()  # keep the pipeline full while this one is handled
        if self._stopping:
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()  # hand it back at once to another member
            return
        try:
            if self.target.client_filter and not matches(self._sub.pattern, msg.subject):
                await self._sub.ack(msg)
                return
            self._current, self._progress_at = msg, started
            await self._sub.handle(msg, self.consumer)
            took = time.monotonic() - started
            self._handle_seconds = 0.8 * self._handle_seconds + 0.2 * took
        except nats.errors.Error as exc:  # ack/nak lost with the connection: redelivered
            log.info("could not settle a message of %s: %r", self.consumer, exc)
        finally:
            self._current = None
        if slow:
            await self._request()  # only now: a buffered event would wait too long

    async def _on_status(self, msg: Msg) -> None:
        headers = msg.headers or {}
        status = headers.get("Status", "")
        if status == "100":
            return  # idle heartbeat
        pending = headers.get("Nats-Pending-Messages")
        if pending is not None and pending.isdigit():
            self._outstanding = max(0, self._outstanding - int(pending))
        else:
            self._outstanding = 0
        if status == "408" or status == "404":
            await self._request()
            return
        description = headers.get("Description", "")
        log.info("pull consumer %s: status %s %s", self.consumer, status, description)
        self._not_before = time.monotonic() + 0.25
        if "deleted" in description.lower() and not self._stopping:
            self._bus._spawn(self._recreate_if_missing())

    def halt(self) -> None:
        """Hand back (nak) every message from now on instead of handling it; `stop` follows."""
        self._stopping = True

    async def stop(self, *, delete: bool) -> None:
        self.halt()
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        if self._inbox is not None and not self._bus._connected():
            with contextlib.suppress(nats.errors.Error):
                await self._inbox.unsubscribe()
        elif self._inbox is not None:
            # Drain: buffered messages reach _on_msg, which naks them while stopping.
            try:
                await asyncio.wait_for(self._inbox.drain(), timeout=2.0)
            except (TimeoutError, nats.errors.Error):
                with contextlib.suppress(nats.errors.Error):
                    await self._inbox.unsubscribe()
        await self._bus._acks.flush()  # what was handled stays handled
        if delete and self._bus._connected():
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await self._bus._jetstream().delete_consumer(self.target.stream, self.consumer)


# --------------------------------------------------------------------------- subscription


class _NatsSubscription(Subscription):
    def __init__(
        self,
        bus: NatsBus,
        pattern: str,
        group: str | None,
        handler: AsyncHandler,
        max_deliveries: int,
        ordered: bool = False,
    ) -> None:
        self.pattern = pattern
        self.group = group
        self.ordered = ordered
        self.bus = bus
        self._handler = handler
        self._max_deliveries = max_deliveries
        self._seen = _SeenCache(bus._dedup_capacity)
        self._pullers: list[_Puller] = []
        self._closed = False

    async def unsubscribe(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.bus._subscriptions.discard(self)
        current = asyncio.current_task()
        if any(puller.task is current for puller in self._pullers):
            # Called from our own handler: draining would wait for this very call. Stop at
            # once all the same: nats-py hands over the next buffered message without a
            # yield, before the spawned stop runs, and that one must be nak'ed, not handled.
            for puller in self._pullers:
                puller.halt()
            self.bus._spawn(self._stop())
            return
        await self._stop()

    async def _stop(self) -> None:
        for puller in self._pullers:
            await puller.stop(delete=self.group is None)

    async def handle(self, msg: Msg, consumer: str) -> None:
        """Decode, de-duplicate, call the handler, then ack / nak / dead-letter."""
        bus = self.bus
        attempt = _delivered(msg)
        try:
            envelope = decode(msg.data, max_bytes=bus._max_event_bytes)
        except EnvelopeError as exc:
            await bus._dead_letter_raw(msg, str(exc), attempt, self.group, consumer)
            return
        key = dedup_key(envelope, msg.subject)
        if key in self._seen:
            await self.ack(msg)
            return
        if attempt > self._max_deliveries:
            reason = (
                f"delivered {attempt} times without success; the consumer stopped while "
                "handling it or could not dead-letter it"
            )
            await bus._dead_letter(msg, envelope, reason, attempt - 1, self.group, consumer)
            return
        try:
            await self._handler(envelope, Delivery(msg.subject, attempt, self.group))
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if attempt >= self._max_deliveries:
                await bus._dead_letter(msg, envelope, reason, attempt, self.group, consumer)
            else:
                log.info(
                    "handler failed on %s (attempt %d/%d): %s",
                    envelope.id,
                    attempt,
                    self._max_deliveries,
                    reason,
                )
                await msg.nak(delay=bus._redelivery_delay(attempt))
            return
        self._seen.add(key)
        await self.ack(msg)

    async def ack(self, msg: Msg) -> None:
        """Ack a handled event: at once when ordered (the next one waits for it), else with
        the bus's other acks (`_AckBatch`)."""
        if self.ordered:
            await msg.ack()
        else:
            await self.bus._acks.add(msg)


# --------------------------------------------------------------------------- the bus


class NatsBus(EventBus):
    """NATS JetStream adapter of the bus port.

    Args:
        url: NATS server URL(s), comma-separated.
        validator: lane rules checked before every publish (default: topic rules only).
        name: client/connection name and prefix of durable consumer names; processes of one
            service share it, so that their groups compete on the same durables.
        stream_prefix: stream names are ``<stream_prefix>_ACT|HYP|SC|INFRA``.
        ack_wait_seconds: how long JetStream waits for an ack before redelivering.
        dedup_window_seconds: the streams' duplicate window (``Nats-Msg-Id``), at creation.
        max_age_seconds: retention of every stream at creation (default: per family,
            as `virtufin.deploy.streams`: act 7 d, hyp 1 d, sc 30 d, infra 7 d).
        reconnect_time_wait_seconds: pause between reconnect attempts.
        max_reconnect_attempts: -1 reconnects forever.
        connect_timeout_seconds: how long `start` may take to reach the server at all.
        publish_timeout_seconds: how long `publish` keeps retrying (e.g. while the server
            restarts) before it raises `BusError`.
        redelivery_delay_seconds: nak delay after the first failure; doubles per attempt.
        max_redelivery_delay_seconds: ceiling of that delay.
        max_event_bytes: larger encoded events are refused on publish and dead-lettered on
            receipt.
        prefetch: pull batch size: events buffered per consumer.
        dedup_capacity: how many handled (source, id) pairs each subscription remembers.
        fanout_inactive_seconds: the server deletes a group-less consumer idle this long
            (a process that died without unsubscribing).
        ordered_ack_wait_seconds: the ack wait of ordered subscriptions' consumers: how long
            an event held by a member that died blocks its group before it is redelivered.

    Example:
        >>> bus = await NatsBus.connect(name="gateway")  # doctest: +SKIP
    """

    name = "nats"

    def __init__(
        self,
        *,
        url: str = DEFAULT_NATS_URL,
        validator: LaneValidator | None = None,
        name: str = "virtufin",
        stream_prefix: str = "VIRTUFIN",
        ack_wait_seconds: float = 30.0,
        dedup_window_seconds: float = 120.0,
        max_age_seconds: float | None = None,
        reconnect_time_wait_seconds: float = 0.5,
        max_reconnect_attempts: int = -1,
        connect_timeout_seconds: float = 5.0,
        publish_timeout_seconds: float = 30.0,
        redelivery_delay_seconds: float = 0.2,
        max_redelivery_delay_seconds: float = 10.0,
        max_event_bytes: int = MAX_ENVELOPE_BYTES,
        prefetch: int = 128,
        dedup_capacity: int = 100_000,
        fanout_inactive_seconds: float = 3600.0,
        ordered_ack_wait_seconds: float = 5.0,
    ) -> None:
        if not _NAME_RE.match(stream_prefix):
            raise ValueError(f"stream_prefix {stream_prefix!r} must match {_NAME_RE.pattern}")
        if not name or len(name) > 64:
            raise ValueError("name must be 1-64 characters")
        if prefetch < 1 or ack_wait_seconds <= 0 or ordered_ack_wait_seconds <= 0:
            raise ValueError("prefetch and the ack waits must be positive")
        self.url = url
        self.validator = validator if validator is not None else LaneValidator()
        self.client_name = name
        self.stream_prefix = stream_prefix
        self._ack_wait = ack_wait_seconds
        self._dedup_window = dedup_window_seconds
        self._max_age = max_age_seconds
        self._reconnect_wait = reconnect_time_wait_seconds
        self._max_reconnects = max_reconnect_attempts
        self._connect_timeout = connect_timeout_seconds
        self._publish_timeout = publish_timeout_seconds
        self._nak_delay = redelivery_delay_seconds
        self._max_nak_delay = max_redelivery_delay_seconds
        self._max_event_bytes = max_event_bytes
        self._prefetch = prefetch
        self._dedup_capacity = dedup_capacity
        self._fanout_inactive = fanout_inactive_seconds
        self._ordered_ack_wait = ordered_ack_wait_seconds
        self._nc: Client | None = None
        self._js: Any = None
        self.reconnects = 0
        """How often the connection was re-established (observability, tests)."""
        self._closing = False
        self._subscriptions: set[_NatsSubscription] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._infra_subjects: set[str] = set()
        self._infra_lock = asyncio.Lock()
        self._denied: dict[str, str] = {}  # lower-cased subject → the server's refusal
        self._created_consumers: set[tuple[str, str]] = set()
        self.dead_letters = 0
        # Publish acknowledgements: replies to <_ack_prefix><token>, one wildcard subscription.
        self._ack_prefix = ""
        self._ack_sub: Any = None
        self._ack_waiters: dict[str, tuple[asyncio.Future[Msg], float]] = {}
        self._ack_tokens = 0
        self._ack_sweeper: asyncio.Task[None] | None = None
        self._acks = _AckBatch(self)

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def connect(cls, **kwargs: Any) -> NatsBus:
        """Create a bus with `kwargs` (see the class) and `start` it."""
        bus = cls(**kwargs)
        await bus.start()
        return bus

    @property
    def streams(self) -> Mapping[str, str]:
        """Family (``act``, ``hyp``, ``sc``, ``infra``) → stream name."""
        return {family: f"{self.stream_prefix}_{suffix}" for family, suffix, _, _ in _FAMILIES}

    async def start(self) -> None:
        """Connect and make sure the four streams exist (idempotent).

        Raises:
            BusError: the server cannot be reached within `connect_timeout_seconds`, or a
                stream cannot be created (e.g. its subjects overlap a foreign stream).
        """
        if self._nc is not None:
            return
        self._closing = False
        nc = _Client()
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=[u.strip() for u in self.url.split(",")],
                    name=self.client_name,
                    allow_reconnect=True,
                    max_reconnect_attempts=self._max_reconnects,
                    reconnect_time_wait=self._reconnect_wait,
                    connect_timeout=max(1, int(self._connect_timeout)),
                    ping_interval=10,
                    max_outstanding_pings=3,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                ),
                timeout=self._connect_timeout,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            raise BusError(
                self.url,
                f"cannot connect to NATS at {self.url} within {self._connect_timeout:g}s ({exc!r})",
            ) from exc
        self._nc = nc
        self._js = nc.jetstream(timeout=5.0)
        try:
            self._ack_prefix = nc.new_inbox() + "."
            self._ack_sub = await nc.subscribe(
                self._ack_prefix + "*", cb=self._on_publish_ack, pending_msgs_limit=1_000_000
            )
            nc.ack_sid, nc.on_ack = self._ack_sub._id, self._ack_arrived
            self._ack_sweeper = asyncio.create_task(self._sweep_acks(), name="bus-publish-acks")
            await self._ensure_streams()
        except BaseException:
            await self.close()
            raise

    async def __aenter__(self) -> NatsBus:
        await self.start()
        return self

    async def close(self) -> None:
        """Stop every subscription (buffered events are handed back), delete group-less
        consumers, flush pending acks and close the connection."""
        if self._nc is None or self._closing:
            return
        self._closing = True
        for sub in list(self._subscriptions):
            await sub.unsubscribe()
        for task in list(self._background):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=2.0)
        await self._acks.flush()
        if self._ack_sweeper is not None:
            self._ack_sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ack_sweeper
            self._ack_sweeper = None
        for future, _ in self._ack_waiters.values():
            _fail(future, nats.errors.ConnectionClosedError())
        self._ack_waiters.clear()
        nc = self._nc
        try:
            if nc.is_connected:
                await asyncio.wait_for(nc.drain(), timeout=5.0)
        except (TimeoutError, nats.errors.Error) as exc:
            log.debug("drain on close failed: %r", exc)
        finally:
            with contextlib.suppress(Exception):
                await nc.close()
            self._nc = None

    async def delete_consumers(self) -> None:
        """Delete every consumer this bus created, durable group consumers included (for
        tests and decommissioning: normally durables outlive the process on purpose)."""
        for sub in list(self._subscriptions):
            await sub.unsubscribe()
        jsm = self._jetstream()
        for stream, consumer in sorted(self._created_consumers):
            with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                await jsm.delete_consumer(stream, consumer)
        self._created_consumers.clear()

    async def delete_streams(self) -> None:
        """Delete this bus's four streams (tests with a private `stream_prefix` only)."""
        jsm = self._jetstream()
        for stream in self.streams.values():
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await jsm.delete_stream(stream)

    # ------------------------------------------------------------ connection callbacks

    async def _on_error(self, exc: Exception) -> None:
        text = str(exc)
        denied = _DENIED_RE.search(text)
        if denied:
            # nats-py lower-cases the server's -ERR text, so the subject is matched lower-case.
            self._denied[denied.group(1).lower()] = text
            log.warning("NATS refused: %s", text)
        elif self._closing or isinstance(exc, OSError | nats.errors.UnexpectedEOF):
            log.debug("NATS connection error: %r", exc)  # reconnecting takes care of it
        else:
            log.info("NATS client error: %r", exc)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("disconnected from NATS at %s; reconnecting", self.url)

    async def _on_reconnected(self) -> None:
        self.reconnects += 1  # pullers compare it to re-issue their pull requests
        log.warning("reconnected to NATS")

    def _client(self) -> Client:
        if self._nc is None:
            raise BusError(self.url, "the bus is not started (await bus.start())")
        return self._nc

    def _jetstream(self) -> Any:
        self._client()
        return self._js

    def _connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("background bus task failed: %r", task.exception())

    # ------------------------------------------------------------ streams

    def _stream_config(
        self, family: str, suffix: str, subjects: list[str], age: float
    ) -> StreamConfig:
        return StreamConfig(
            name=f"{self.stream_prefix}_{suffix}",
            description=f"Virtufin {family} topics",
            subjects=subjects,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self._max_age if self._max_age is not None else age,
            duplicate_window=self._dedup_window,
            num_replicas=1,
        )

    async def _ensure_streams(self) -> None:
        for family, suffix, subject, age in _FAMILIES:
            wanted = [subject] if subject is not None else list(_INFRA_BASE_SUBJECTS)
            subjects = await self._ensure_stream(family, suffix, wanted, age)
            if subject is None:
                self._infra_subjects = set(subjects)

    async def _ensure_stream(
        self, family: str, suffix: str, wanted: list[str], age: float
    ) -> list[str]:
        try:
            return await self._ensure_stream_once(family, suffix, wanted, age)
        except (nats.errors.Error, TimeoutError) as exc:
            name = f"{self.stream_prefix}_{suffix}"
            raise BusError(name, f"JetStream did not answer about stream {name} ({exc!r})") from exc

    async def _ensure_stream_once(
        self, family: str, suffix: str, wanted: list[str], age: float
    ) -> list[str]:
        """Create the stream, or widen an existing one so it captures `wanted`.

        Never narrows: subjects someone else added stay (only those `wanted` subsumes go).
        Returns the stream's subjects afterwards.
        """
        jsm = self._jetstream()
        name = f"{self.stream_prefix}_{suffix}"
        try:
            info = await jsm.stream_info(name)
        except nats.js.errors.NotFoundError:
            try:
                await jsm.add_stream(self._stream_config(family, suffix, wanted, age))
                return wanted
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != 10058:  # 10058: created meanwhile by someone else
                    raise BusError(
                        name, f"cannot create stream {name} for {wanted}: {exc.description}"
                    ) from exc
                info = await jsm.stream_info(name)
        current = list(info.config.subjects or [])
        missing = [s for s in wanted if not _covers(current, s)]
        if not missing:
            return current
        merged = [s for s in current if not _covers(missing, s)] + missing
        config = info.config
        config.subjects = merged
        try:
            await jsm.update_stream(config)
        except nats.js.errors.APIError as exc:
            raise BusError(
                name, f"cannot add {missing} to stream {name}: {exc.description}"
            ) from exc
        log.info("stream %s now captures %s", name, merged)
        return merged

    async def _ensure_infra(self, subject: str, *, force: bool = False) -> None:
        """Make the INFRA stream capture `subject` (``<service>.>`` or a single token)."""
        if not force and _covers(self._infra_subjects, subject):
            return
        async with self._infra_lock:
            if not force and _covers(self._infra_subjects, subject):
                return
            subjects = await self._ensure_stream("infra", "INFRA", [subject], 7 * _DAY)
            self._infra_subjects = set(subjects)

    # ------------------------------------------------------------ publish

    async def publish(self, topic: str, envelope: Envelope) -> None:
        """Validate, encode and store `envelope` on `topic`; returns once JetStream acked.

        Raises:
            PublishRejectedError: lane rules, an oversized or unencodable event, or the
                broker refused it (permissions, no stream).
            BusError: no acknowledgement within `publish_timeout_seconds`.
        """
        body = await self._prepare(topic, envelope)
        await self._publish_raw(topic, body, f"{envelope.source}|{envelope.id}")

    async def publish_many(self, items: Sequence[tuple[str, Envelope]]) -> None:
        """Validate and encode every event, write them back to back (stored in this order),
        then wait for all the acknowledgements at once.

        An event whose first attempt failed is retried on its own (same id: the server drops
        a copy it already has), after the others. Raises the first error (see `publish`).
        """
        if len(items) < 2 or any(stream_subject_for(topic) is not None for topic, _ in items):
            # INFRA topics may need their stream widened first: one at a time, in order.
            for topic, envelope in items:
                await self.publish(topic, envelope)
            return
        prepared = [
            (topic, await self._prepare(topic, envelope), f"{envelope.source}|{envelope.id}")
            for topic, envelope in items
        ]
        self._jetstream()
        futures: list[asyncio.Future[Msg] | None] = []
        for topic, body, msg_id in prepared:
            try:
                futures.append(
                    await self._send(topic, body, self._headers(msg_id), _FIRST_ACK_SECONDS)
                )
            except nats.errors.Error:
                futures.append(None)
        failure: BaseException | None = None
        for (topic, body, msg_id), future in zip(prepared, futures, strict=True):
            if future is not None:
                try:
                    self._settle(await future)
                    continue
                except (nats.errors.Error, TimeoutError):
                    pass  # retried below, with the full error handling
            try:
                await self._publish_raw(topic, body, msg_id)
            except (BusError, PublishRejectedError) as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    async def _prepare(self, topic: str, envelope: Envelope) -> bytes:
        await self.validator.check(topic, envelope)
        try:
            return encode(envelope, max_bytes=self._max_event_bytes)
        except EnvelopeError as exc:
            raise PublishRejectedError(topic, str(exc)) from None

    @staticmethod
    def _headers(msg_id: str) -> dict[str, str]:
        return {"Nats-Msg-Id": msg_id.replace("\r", " ").replace("\n", " ")}

    # ------------------------------------------------------------ publish acknowledgements

    async def _send(
        self, subject: str, body: bytes, headers: dict[str, str], wait: float
    ) -> asyncio.Future[Msg]:
        """Issue one JetStream publish; the future gets the server's reply (or TimeoutError
        from the sweeper after `wait` seconds)."""
        self._ack_tokens += 1
        token = str(self._ack_tokens)
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._ack_waiters[token] = (future, time.monotonic() + wait)
        try:
            await self._client().publish(
                subject, body, reply=self._ack_prefix + token, headers=headers
            )
        except BaseException:
            self._ack_waiters.pop(token, None)
            raise
        return future

    async def _on_publish_ack(self, msg: Msg) -> None:
        self._ack_arrived(msg)

    def _ack_arrived(self, msg: Msg) -> None:
        entry = self._ack_waiters.pop(msg.subject[len(self._ack_prefix) :], None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(msg)

    async def _sweep_acks(self) -> None:
        """Fail the publish waits past their deadline: one timer for all of them."""
        while True:
            await asyncio.sleep(_ACK_SWEEP_SECONDS)
            if not self._ack_waiters:
                continue
            now = time.monotonic()
            for token in [t for t, (_, due) in self._ack_waiters.items() if due <= now]:
                future, _ = self._ack_waiters.pop(token)
                _fail(future, nats.errors.TimeoutError())

    @staticmethod
    def _settle(reply: Msg) -> None:
        """Raise what JetStream's reply to a publish says went wrong (nothing: stored)."""
        headers = reply.headers
        if headers and headers.get("Status") == "503":
            raise nats.js.errors.NoStreamResponseError
        if b'"error"' in reply.data:
            answer = json.loads(reply.data)
            if isinstance(answer, dict) and "error" in answer:
                nats.js.errors.APIError.from_error(answer["error"])  # raises its subclass

    async def _publish_raw(self, subject: str, body: bytes, msg_id: str) -> None:
        self._jetstream()
        infra = stream_subject_for(subject)
        if infra is not None:
            with contextlib.suppress(BusError):  # unreachable now: the retries below cover it
                await self._ensure_infra(infra)
        headers = self._headers(msg_id)
        deadline = time.monotonic() + self._publish_timeout
        pause = 0.05
        while True:
            remaining = deadline - time.monotonic()
            try:
                future = await self._send(subject, body, headers, min(2.0, max(remaining, 0.1)))
                self._settle(await future)
                return
            except nats.errors.MaxPayloadError as exc:
                raise PublishRejectedError(
                    subject, f"event of {len(body)} B exceeds the server's max payload ({exc})"
                ) from None
            except nats.js.errors.NoStreamResponseError:
                problem = "no JetStream stream answered"
                if infra is not None and self._connected():
                    with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError, BusError):
                        await self._ensure_infra(infra, force=True)
                elif self._connected() and await self._stream_missing(subject):
                    raise PublishRejectedError(
                        subject,
                        "no JetStream stream captures this subject (was the "
                        f"{self.stream_prefix}_* stream deleted?)",
                    ) from None
            except nats.js.errors.ServiceUnavailableError as exc:
                problem = f"JetStream unavailable ({exc.description})"
            except nats.js.errors.APIError as exc:
                raise PublishRejectedError(
                    subject, f"JetStream refused the event: {exc.description} (code {exc.err_code})"
                ) from None
            except (TimeoutError, nats.errors.TimeoutError):
                problem = "no acknowledgement"
            except nats.errors.ConnectionClosedError:
                if self._closing or self._nc is None or self._nc.is_closed:
                    raise BusError(subject, "the bus is closed") from None
                problem = "connection closed"
            except nats.errors.Error as exc:  # reconnecting, outbound buffer full, …
                problem = repr(exc)
            denied = self._denied.pop(subject.lower(), None)
            if denied is not None:
                raise PublishRejectedError(subject, f"the broker refused it: {denied}")
            if time.monotonic() + pause >= deadline:
                raise BusError(
                    subject,
                    f"not stored within {self._publish_timeout:g}s "
                    f"({problem}); retrying with the same event id is safe",
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def _stream_missing(self, subject: str) -> bool:
        try:
            await self._jetstream().find_stream_name_by_subject(subject)
        except nats.js.errors.NotFoundError:
            return True
        except (TimeoutError, nats.errors.Error):
            return False
        return False

    # ------------------------------------------------------------ subscribe

    def _targets(self, pattern: str) -> list[_Target]:
        """The (stream, filter) pairs that together carry every topic `pattern` matches."""
        head = pattern.split(".", 1)[0]
        streams = self.streams
        if head in _LANE_HEADS:
            return [_Target(streams[head], pattern, False)]
        targets: list[_Target] = []
        if head in ("*", ">"):
            for family, _, subject, _ in _FAMILIES:
                if subject is None:
                    continue
                narrowed = intersect(pattern, subject)
                if narrowed is None:
                    continue
                tokens = narrowed.split(".")
                if ">" not in tokens and len(tokens) < _LANE_MIN_TOKENS[family]:
                    continue  # no valid topic of this family is that short
                targets.append(_Target(streams[family], narrowed, False))
            # Services join INFRA over time: read all of it and match here.
            targets.append(_Target(streams["infra"], None, pattern != ">"))
            return targets
        return [_Target(streams["infra"], pattern, False)]

    def _consumer_config(
        self,
        consumer: str,
        target: _Target,
        pattern: str,
        group: str | None,
        *,
        ordered: bool = False,
    ) -> ConsumerConfig:
        return ConsumerConfig(
            name=consumer,
            durable_name=consumer,
            description=(
                f"virtufin {self.client_name} {pattern} group={group or '-'}"
                + (" ordered" if ordered else "")
            ),
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ordered_ack_wait if ordered else self._ack_wait,
            max_deliver=-1,
            filter_subject=target.filter_subject,
            # Ordered: the next event only once the previous one is settled (strict order,
            # redeliveries first). Otherwise: room for a few prefetches.
            max_ack_pending=1 if ordered else max(1024, 4 * self._prefetch),
            inactive_threshold=None if group is not None else self._fanout_inactive,
        )

    async def subscribe(
        self,
        pattern: str,
        handler: AsyncHandler,
        *,
        group: str | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        ordered: bool = False,
    ) -> Subscription:
        """Deliver events on topics matching `pattern` (from now on) to `handler`.

        Members with the same (pattern, group) and bus `name` share one durable consumer,
        also across processes; it outlives them, so a restarted member resumes where the
        group left off. Without a group the subscription gets its own consumer. `ordered`:
        strict order per consumer (see the module docstring); a pattern that spans several
        streams (a leading wildcard) is ordered per stream.

        Raises:
            TopicError: the pattern is malformed.
            BusError: the consumer cannot be created.
        """
        validate_pattern(pattern)
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self._client()
        infra = stream_subject_for(pattern)
        if infra is not None:
            await self._ensure_infra(infra)
        sub = _NatsSubscription(self, pattern, group, handler, max_deliveries, ordered)
        unique = "" if group is not None else uuid.uuid4().hex
        try:
            for target in self._targets(pattern):
                consumer = consumer_name(
                    self.client_name,
                    pattern,
                    group,
                    f"{target.stream}:{target.filter_subject}",
                    unique=unique,
                )
                config = self._consumer_config(consumer, target, pattern, group, ordered=ordered)
                puller = _Puller(sub, target, consumer, config)
                sub._pullers.append(puller)
                self._created_consumers.add((target.stream, consumer))
                await puller.start()
        except BaseException:
            await sub.unsubscribe()
            raise
        self._subscriptions.add(sub)
        return sub

    # ------------------------------------------------------------ failures

    def _redelivery_delay(self, attempt: int) -> float:
        return float(min(self._nak_delay * 2 ** (attempt - 1), self._max_nak_delay))

    async def _dead_letter(
        self,
        msg: Msg,
        envelope: Envelope,
        reason: str,
        attempts: int,
        group: str | None,
        consumer: str,
    ) -> None:
        """Publish the event to ``bus.deadletter`` with the reason, then terminate it.

        If dead-lettering fails the original is nak'ed, so it comes back and is dead-lettered
        on its next delivery: never silently dropped.
        """
        log.warning(
            "dead-lettering %s from %s after %d attempts: %s",
            envelope.id,
            msg.subject,
            attempts,
            reason,
        )
        if msg.subject == topics.DEAD_LETTER:
            log.error(
                "handler of %s failed on a dead letter; dropping it: %s", topics.DEAD_LETTER, reason
            )
            await msg.term()
            return
        dead = dead_letter_envelope(
            envelope, topic=msg.subject, reason=reason, attempts=attempts, group=group
        )
        await self._dead_letter_publish(
            msg,
            encode(dead, max_bytes=2 * self._max_event_bytes),
            f"{envelope.source}|{envelope.id}|dl|{consumer}",
        )

    async def _dead_letter_raw(
        self, msg: Msg, reason: str, attempts: int, group: str | None, consumer: str
    ) -> None:
        """An undecodable message: its raw bytes go to ``bus.deadletter`` as binary data."""
        raw = bytes(msg.data)
        log.warning("dead-lettering an undecodable message on %s: %s", msg.subject, reason)
        if msg.subject == topics.DEAD_LETTER:
            await msg.term()
            return
        # Base64 grows data by 4/3; leave room for the attributes so the letter stays decodable.
        keep = raw[: min(_DEAD_LETTER_KEEP_BYTES, (self._max_event_bytes - 4096) * 3 // 4)]
        extensions: dict[str, Any] = {"dlsize": len(raw)}
        if len(keep) < len(raw):
            extensions["dltruncated"] = True
        carrier = Envelope.new(
            type=topics.EventTypes.DEAD_LETTER,
            source=topics.source_urn(f"bus.{self.client_name}"),
            data=keep,
            datacontenttype="application/octet-stream",
            extensions=extensions,
        )
        dead = dead_letter_envelope(
            carrier, topic=msg.subject, reason=reason, attempts=attempts, group=group
        )
        seq = msg.metadata.sequence.stream
        await self._dead_letter_publish(
            msg,
            encode(dead, max_bytes=2 * self._max_event_bytes),
            f"raw|{msg.metadata.stream}|{seq}|dl|{consumer}",
        )

    async def _dead_letter_publish(self, msg: Msg, body: bytes, msg_id: str) -> None:
        try:
            await self._publish_raw(topics.DEAD_LETTER, body, msg_id)
        except (BusError, nats.errors.Error) as exc:
            log.error("could not dead-letter (will retry on redelivery): %s", exc)
            with contextlib.suppress(nats.errors.Error):
                await msg.nak(delay=self._max_nak_delay)
            return
        self.dead_letters += 1
        await msg.term()
