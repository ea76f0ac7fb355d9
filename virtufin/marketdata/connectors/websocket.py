"""Venue WebSockets: Virtufin's WebSocketManager role as a library (the gRPC service wraps it).

A `WebSocketConnection` owns one socket and a task that keeps it open: connect, read frames,
and on a drop reconnect with exponential backoff (`Backoff`) when ``auto_reconnect`` is set.
Inbound frames are, in order:

1. **replies**: a JSON object whose ``id`` matches a pending correlated `send` resolves that
   send (the first reply with the id wins; later ones are ordinary frames) and is not
   published;
2. **market data**, while publishing: the venue's normaliser (`normalizer_for`) turns the
   frame into Virtufin payloads published on ``act.exchange.<venue>…`` topics that match the
   connection's publish pattern; venues without a normaliser publish the raw frame on the
   (concrete) publish topic, as Virtufin's WebSocketManager does.

**No acknowledged frame is lost.** A frame counts as published (`frames_published`) only once
the bus returned from ``publish`` for every event it produced, i.e. the broker acknowledged
them; frames are handled one at a time in arrival order, and a publish that fails is retried
(same event ids, so the broker de-duplicates) before the next frame is read. When the socket
drops, the frames it already delivered are still published, then the socket is re-opened and
the venue subscriptions made through `send` (Binance ``SUBSCRIBE``/``UNSUBSCRIBE``) are
re-sent, so the stream resumes without a caller noticing. Frames the venue sent while no
socket was open are gone: a WebSocket cannot replay them (gaps show as jumps in
``last_update_id``; re-snapshot the order book).

Example:
    >>> manager = ConnectionManager(publish=bus.publish)                     # doctest: +SKIP
    >>> conn = await manager.connect("wss://stream.binance.com:9443/ws", venue="binance",
    ...                              auto_reconnect=True)                  # doctest: +SKIP
    >>> await conn.send('{"method":"SUBSCRIBE","params":["btcusdt@trade"]}', timeout_s=5)
    >>> conn.start_publish("act.exchange.binance.>")                        # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException

from virtufin import topics
from virtufin.envelope import Envelope
from virtufin.errors import BusError, PublishRejectedError, TopicError, VirtufinError
from virtufin.lanes import Family, matches, parse, validate_pattern
from virtufin.marketdata.connectors.normalize import (
    MarketEvent,
    NormalizeError,
    Normalizer,
    normalizer_for,
)
from virtufin.topics import EventTypes

__all__ = [
    "Backoff",
    "ConnectionManager",
    "ConnectionStatus",
    "Publish",
    "WebSocketConnection",
    "WebSocketError",
]

log = logging.getLogger(__name__)

Publish = Callable[[str, Envelope], Awaitable[None]]
StatusListener = Callable[["WebSocketConnection"], Awaitable[None]]

_VENUE_RE: Final = re.compile(r"^[a-z0-9]{1,32}$")
_SOURCE: Final = topics.source_urn("marketdata")
_SUBSCRIPTION_METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE")
_RESUBSCRIBE_TIMEOUT_S: Final = 10.0
_PUBLISH_RETRY_MAX_S: Final = 5.0


class WebSocketError(VirtufinError):
    """A connection cannot do what was asked (unknown id, not connected, cannot connect)."""

    def __init__(self, connection_id: str, reason: str, *, not_found: bool = False) -> None:
        self.connection_id = connection_id
        self.reason = reason
        self.not_found = not_found
        super().__init__(f"connection {connection_id!r}: {reason}")


class ConnectionStatus(StrEnum):
    """Mirrors ``com.virtufin.websocketmanager.connection.*`` and the proto enum."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    DISCONNECTED = "disconnected"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: `initial_s`, doubling up to `max_s`, each ±`jitter` (fraction)."""

    initial_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        base = min(self.max_s, self.initial_s * self.factor**attempt)
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


def _reply_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


class WebSocketConnection:
    """One venue socket (see the module docstring).

    Args:
        connection_id: the id the manager gave it.
        url: ``ws://`` or ``wss://``.
        venue: the venue token of published topics.
        auto_reconnect: re-open after a drop (backoff), else end in ``disconnected``/``error``.
        publish: the bus's publish (returns once the broker acknowledged).
        on_status: called after every status change.
        backoff: reconnect delays.
        open_timeout_s: how long one connection attempt may take.
    """

    def __init__(
        self,
        connection_id: str,
        url: str,
        *,
        venue: str,
        auto_reconnect: bool,
        publish: Publish,
        on_status: StatusListener | None = None,
        backoff: Backoff | None = None,
        open_timeout_s: float = 10.0,
        ping_interval_s: float | None = 20.0,
    ) -> None:
        self.id = connection_id
        self.url = url
        self.venue = venue
        self.auto_reconnect = auto_reconnect
        self.status = ConnectionStatus.CONNECTING
        self.publish_topic = ""
        self.connected_at: datetime | None = None
        self.last_error = ""
        self.frames_received = 0
        self.frames_published = 0
        self.frames_ignored = 0
        self.frames_failed = 0
        self.events_published = 0
        self.connects = 0
        self.normalizer: Normalizer | None = normalizer_for(venue)
        self._publish = publish
        self._on_status = on_status
        self._backoff = backoff or Backoff()
        self._open_timeout = open_timeout_s
        self._ping_interval = ping_interval_s
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._pending: dict[str, asyncio.Future[str]] = {}
        self._ids = itertools.count(1)
        self._streams: dict[str, None] = {}  # venue subscriptions to restore, in order
        self._first_attempt: asyncio.Future[None] | None = None
        self._resubscribing: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> ConnectionStatus:
        """Start the connection task; return the status after the first attempt.

        Raises:
            WebSocketError: the first attempt failed and ``auto_reconnect`` is off.
        """
        loop = asyncio.get_running_loop()
        self._first_attempt = loop.create_future()
        self._task = asyncio.create_task(self._run(), name=f"ws:{self.id}")
        await asyncio.shield(self._first_attempt)
        if self.status is ConnectionStatus.ERROR and not self.auto_reconnect:
            await self.close()
            raise WebSocketError(self.id, f"cannot connect to {self.url}: {self.last_error}")
        return self.status

    async def close(self) -> None:
        """Close the socket and stop reconnecting (idempotent)."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for resub in list(self._resubscribing):
            resub.cancel()
        self._fail_pending("the connection was closed")
        if self.status is not ConnectionStatus.DISCONNECTED:
            await self._set_status(ConnectionStatus.DISCONNECTED)

    async def _set_status(self, status: ConnectionStatus, error: str = "") -> None:
        self.status = status
        if error:
            self.last_error = error
        elif status is ConnectionStatus.CONNECTED:
            self.last_error = ""
        if self._on_status is not None:
            try:
                await self._on_status(self)
            except Exception as exc:  # a lifecycle event must never break the socket
                log.warning("status listener of %s failed: %r", self.id, exc)

    def _first_done(self) -> None:
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(None)

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._closing:
                if self.connects:
                    await self._set_status(ConnectionStatus.RECONNECTING)
                try:
                    async with connect(
                        self.url,
                        open_timeout=self._open_timeout,
                        ping_interval=self._ping_interval,
                        proxy=None,
                        max_size=4 * 1024 * 1024,
                    ) as ws:
                        self._ws = ws
                        self.connects += 1
                        attempt = 0
                        self.connected_at = datetime.now(UTC)
                        await self._set_status(ConnectionStatus.CONNECTED)
                        self._first_done()
                        if self.connects > 1:
                            self._resubscribe(ws)
                        async for frame in ws:
                            await self._on_frame(frame)
                    error = "closed by the venue"
                except asyncio.CancelledError:
                    raise
                except (OSError, TimeoutError, InvalidURI, InvalidHandshake) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                except WebSocketException as exc:
                    error = f"{type(exc).__name__}: {exc}"
                finally:
                    self._ws = None
                    self._fail_pending("the connection dropped before the reply")
                if self._closing:
                    break
                if not self.auto_reconnect:
                    status = (
                        ConnectionStatus.DISCONNECTED if self.connects else ConnectionStatus.ERROR
                    )
                    await self._set_status(status, error)
                    self._first_done()
                    return
                self.last_error = error
                if not self.connects:
                    await self._set_status(ConnectionStatus.RECONNECTING, error)
                    self._first_done()
                delay = self._backoff.delay(attempt)
                attempt += 1
                log.info(
                    "connection %s to %s lost (%s); retrying in %.2fs",
                    self.id,
                    self.url,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
        finally:
            self._first_done()

    # ------------------------------------------------------------------ sending

    @property
    def connected(self) -> bool:
        return self._ws is not None and self.status is ConnectionStatus.CONNECTED

    async def send(self, message: str, *, timeout_s: float = 0.0) -> str:
        """Send a text frame; with `timeout_s` > 0 wait for the reply carrying its ``id``.

        A JSON object without an ``id`` gets the next free integer id. A Binance
        ``SUBSCRIBE``/``UNSUBSCRIBE`` that the venue accepted is remembered and re-sent
        after a reconnect.

        Raises:
            WebSocketError: not connected (nothing was sent).
            ValueError: a correlated send that is not a JSON object, or whose id is pending.
            TimeoutError: no reply within `timeout_s`.
        """
        ws = self._ws
        if ws is None or not self.connected:
            raise WebSocketError(self.id, f"is {self.status.value}; nothing was sent")
        if timeout_s <= 0:
            await ws.send(message)
            self._remember(_loads(message), None)
            return ""
        obj = _loads(message)
        if not isinstance(obj, dict):
            raise ValueError("a correlated send needs a JSON object frame (its 'id' correlates)")
        if "id" not in obj or obj["id"] is None:
            obj["id"] = self._next_id()
        key = _reply_key(obj["id"])
        if key in self._pending:
            raise ValueError(f"a send with id {obj['id']!r} is already waiting for its reply")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            await ws.send(json.dumps(obj, separators=(",", ":")))
            reply = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"no reply with id {obj['id']!r} on connection {self.id} within "
                f"{timeout_s * 1000:.0f} ms"
            ) from None
        except WebSocketException as exc:
            raise WebSocketError(self.id, f"send failed: {exc}") from None
        finally:
            self._pending.pop(key, None)
        self._remember(obj, reply)
        return reply

    def _next_id(self) -> int:
        while True:
            candidate = next(self._ids)
            if _reply_key(candidate) not in self._pending:
                return candidate

    def _remember(self, obj: Any, reply: str | None) -> None:
        """Track venue subscriptions (Binance's method/params), so a reconnect restores them."""
        if not isinstance(obj, dict) or obj.get("method") not in _SUBSCRIPTION_METHODS:
            return
        params = obj.get("params")
        if not isinstance(params, list):
            return
        if reply is not None:
            answer = _loads(reply)
            if isinstance(answer, dict) and answer.get("error") is not None:
                return  # refused by the venue: nothing to restore
        for stream in params:
            if not isinstance(stream, str):
                continue
            if obj["method"] == "SUBSCRIBE":
                self._streams[stream] = None
            else:
                self._streams.pop(stream, None)

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The venue streams re-sent after a reconnect."""
        return tuple(self._streams)

    def _resubscribe(self, ws: ClientConnection) -> None:
        """Re-send the venue subscriptions; the reply is read by the frame loop."""
        if not self._streams:
            return
        frame_id = self._next_id()
        key = _reply_key(frame_id)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        frame = {"method": "SUBSCRIBE", "params": list(self._streams), "id": frame_id}

        async def restore() -> None:
            try:
                await ws.send(json.dumps(frame, separators=(",", ":")))
                reply = await asyncio.wait_for(asyncio.shield(future), _RESUBSCRIBE_TIMEOUT_S)
                log.info("connection %s re-subscribed %s: %s", self.id, frame["params"], reply)
            except (TimeoutError, WebSocketException, WebSocketError) as exc:
                log.warning("connection %s could not re-subscribe: %r", self.id, exc)
            finally:
                self._pending.pop(key, None)

        task = asyncio.create_task(restore(), name=f"ws-resubscribe:{self.id}")
        self._resubscribing.add(task)
        task.add_done_callback(self._resubscribing.discard)

    def _fail_pending(self, reason: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WebSocketError(self.id, reason))
                future.exception()  # retrieved: no "never retrieved" warning if nobody waits

    # ------------------------------------------------------------------ publishing

    def start_publish(self, topic: str) -> None:
        """Publish inbound frames from now on (see the module docstring for `topic`).

        Raises:
            TopicError: not an ``act.exchange.<venue>`` topic or pattern of this connection's
                venue, or a pattern for a venue whose frames are published raw.
        """
        tokens = topic.split(".")
        wildcard = "*" in tokens or ">" in tokens
        if wildcard:
            validate_pattern(topic)
        else:
            parsed = parse(topic)
            if parsed.family is not Family.ACT:
                raise TopicError(topic, "connectors publish on act.exchange.<venue>… only")
        if tokens[:2] != ["act", "exchange"] or len(tokens) < 3:
            raise TopicError(topic, "connectors publish on act.exchange.<venue>… only")
        if tokens[2] != self.venue:
            raise TopicError(topic, f"the venue token must be this connection's ({self.venue!r})")
        if wildcard and self.normalizer is None:
            raise TopicError(
                topic,
                f"venue {self.venue!r} has no normaliser: raw frames need one concrete topic",
            )
        self.publish_topic = topic

    def stop_publish(self) -> None:
        self.publish_topic = ""

    async def _on_frame(self, frame: str | bytes) -> None:
        if self._pending:
            obj = _loads(frame)
            if isinstance(obj, dict) and "id" in obj:
                future = self._pending.pop(_reply_key(obj["id"]), None)
                if future is not None and not future.done():
                    text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
                    future.set_result(text)
                    return
        self.frames_received += 1
        topic = self.publish_topic
        if not topic:
            self.frames_ignored += 1
            return
        try:
            publications = self._publications(frame, topic)
        except NormalizeError as exc:
            self.frames_failed += 1
            log.warning("connection %s: %s", self.id, exc)
            return
        if not publications:
            self.frames_ignored += 1
            return
        try:
            for subject, envelope in publications:
                await self._publish_acked(subject, envelope)
        except PublishRejectedError as exc:
            # Refused for good (broker permissions, lane rules): count it, keep reading.
            self.frames_failed += 1
            self.last_error = str(exc)
            log.error("connection %s: %s", self.id, exc)
            return
        self.events_published += len(publications)
        self.frames_published += 1

    def _publications(self, frame: str | bytes, topic: str) -> list[tuple[str, Envelope]]:
        now = datetime.now(UTC)
        if self.normalizer is None:
            entity, event = topic.split(".")[3:5]
            data: Any = _loads(frame)
            content = "application/json"
            if data is _NOT_JSON:
                data = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
                content = "text/plain"
            envelope = Envelope.new(
                type=EventTypes.market(self.venue, entity, event),
                source=_SOURCE,
                data=data,
                time=now,
                datacontenttype=content,
                clocktype="wall",
                eventtime=now,
                walltime=now,
                marketlane="act",
                extensions={"websocketid": self.id},
            )
            return [(topic, envelope)]
        out: list[tuple[str, Envelope]] = []
        for market in self.normalizer.normalize(frame):
            if matches(topic, market.topic) if _is_pattern(topic) else topic == market.topic:
                out.append((market.topic, self._envelope(market, now)))
        return out

    def _envelope(self, event: MarketEvent, now: datetime) -> Envelope:
        return Envelope(
            id=str(uuid.uuid4()),
            source=_SOURCE,
            type=event.type,
            subject=event.subject,
            data=event.data,
            time=event.eventtime,
            clocktype="wall",
            eventtime=event.eventtime,
            walltime=now,
            marketlane="act",
            extensions={"websocketid": self.id},
        )

    async def _publish_acked(self, topic: str, envelope: Envelope) -> None:
        """Publish until the broker acknowledges (retries keep the id: no duplicates)."""
        attempt = 0
        while True:
            try:
                await self._publish(topic, envelope)
                return
            except PublishRejectedError:
                raise  # refused for good (permissions, lane rules): retrying cannot help
            except BusError as exc:
                delay = min(_PUBLISH_RETRY_MAX_S, 0.1 * 2**attempt)
                attempt += 1
                log.warning(
                    "connection %s: publish to %s failed (%s); retrying in %.1fs",
                    self.id,
                    topic,
                    exc.reason,
                    delay,
                )
                await asyncio.sleep(delay)


class _NotJson:
    pass


_NOT_JSON: Final = _NotJson()


def _loads(frame: str | bytes) -> Any:
    try:
        return json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


def _is_pattern(topic: str) -> bool:
    return "*" in topic.split(".") or topic.endswith(">")


class ConnectionManager:
    """The connections of one marketdata instance (it owns their sockets).

    Args:
        publish: the bus's publish.
        on_status: called after every status change of any connection.
        backoff: reconnect delays of new connections.
        instance: this instance's id (`ConnectionInfo.owner_instance`).
    """

    def __init__(
        self,
        *,
        publish: Publish,
        on_status: StatusListener | None = None,
        backoff: Backoff | None = None,
        instance: str = "",
        open_timeout_s: float = 10.0,
    ) -> None:
        self._publish = publish
        self._on_status = on_status
        self._backoff = backoff
        self.instance = instance
        self._open_timeout = open_timeout_s
        self._connections: dict[str, WebSocketConnection] = {}

    async def connect(
        self, url: str, *, venue: str = "", auto_reconnect: bool = False
    ) -> WebSocketConnection:
        """Open a connection (waits for the first attempt).

        Raises:
            ValueError: not a ws/wss URL, or no usable venue.
            WebSocketError: the first attempt failed and ``auto_reconnect`` is off.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"url must be ws:// or wss:// with a host ({url!r})")
        if not venue:
            if "binance" not in parts.hostname:
                raise ValueError(f"venue is required for {parts.hostname!r} (e.g. 'binance')")
            venue = "binance"
        if not _VENUE_RE.match(venue):
            raise ValueError(f"venue {venue!r} must match {_VENUE_RE.pattern}")
        connection = WebSocketConnection(
            uuid.uuid4().hex[:12],
            url,
            venue=venue,
            auto_reconnect=auto_reconnect,
            publish=self._publish,
            on_status=self._on_status,
            backoff=self._backoff,
            open_timeout_s=self._open_timeout,
        )
        self._connections[connection.id] = connection
        try:
            await connection.start()
        except BaseException:
            self._connections.pop(connection.id, None)
            raise
        return connection

    def get(self, connection_id: str) -> WebSocketConnection:
        """Raises: WebSocketError (``not_found``) for an unknown id."""
        found = self._connections.get(connection_id)
        if found is None:
            raise WebSocketError(connection_id, "no such connection", not_found=True)
        return found

    def list(self) -> list[WebSocketConnection]:
        return list(self._connections.values())

    async def disconnect(self, connection_id: str) -> bool:
        """Close and forget a connection; False if it did not exist."""
        connection = self._connections.pop(connection_id, None)
        if connection is None:
            return False
        await connection.close()
        return True

    async def close(self) -> None:
        for connection_id in list(self._connections):
            await self.disconnect(connection_id)
