"""The Dapr adapter of the bus port: the Dapr SDK's publish and streaming subscriptions.

Why it is built the way it is:

- **Publish** validates lanes first, then sends our structured CloudEvent with
  ``DaprClient.publish_event`` as ``application/cloudevents+json``, so the sidecar keeps our
  attributes instead of wrapping the event in one of its own. The envelope's ``traceparent``
  rides along as gRPC metadata, so the sidecar's publish span continues the event's trace.
  Dapr refusing the publish raises `PublishRejectedError`; an unreachable sidecar `BusError`.
- **Delivery uses streaming subscriptions** (``DaprClient.subscribe``, the sidecar's
  ``SubscribeTopicEventsAlpha1``), not the app callback (``dapr.ext.grpc.App``,
  ``OnTopicEvent``). daprd asks an app for its programmatic subscriptions once, at start-up,
  so an app-callback bus could not honour `subscribe`/`unsubscribe` at run time, which the
  gateway's ``Subscribe`` stream and the WorkManager starting and stopping workers need.
  Streams are added and closed at will, need no app port (a Dagster run has none) and no
  thread pool (the ``App`` is a synchronous gRPC server). Each event still arrives as the
  ``TopicEventRequest`` daprd sends to ``OnTopicEvent`` and is answered SUCCESS, RETRY or DROP.
- **Patterns**: Dapr subscribes by topic name. The pattern is passed as that name:
  ``pubsub.jetstream`` (our component) makes it the consumer's filter subject, so ``*`` and
  ``>`` work as on NATS, and the concrete topic comes back in the CloudEvent's ``topic``
  attribute, set by the publishing sidecar. Components without subject wildcards (e.g.
  ``pubsub.redis``) take a pattern as a literal name: with those, subscribe to concrete topics.
- **One Dapr stream per pattern**, shared by every local subscriber of that pattern; a
  `group`'s members take turns, every other subscriber gets each event. Across processes,
  competition follows the component's consumer group (the app id, ``queueGroupName``).
- **What the sidecar changes in flight is undone here.** daprd owns the CloudEvent attributes
  ``topic``, ``pubsubname``, ``traceid``, ``traceparent``, ``tracestate`` and overwrites them;
  and its gRPC delivery carries ``data`` only for JSON and text content types. The envelope's
  own values of those attributes, the absence of ``time``, and how ``data`` was sent travel in
  one extension, ``vfdapr`` (a JSON object as a string), so the handler gets an envelope
  equal to the published one. Data Dapr could not carry as ``data`` goes as ``data_base64``.
- **Redelivery and dead letters are decided here**: a failed handler makes the answer RETRY
  (the sidecar redelivers) until the subscriber's `max_deliveries`; the last failure publishes
  `dead_letter_envelope` to ``bus.deadletter`` and answers SUCCESS (RETRY if that publish
  failed, and the handler is not called again). An event that does not decode is published to
  ``bus.deadletter`` as a record holding its raw form and the reason, then answered DROP.
  Nothing is dropped without a dead letter. Streams carry no Dapr dead-letter topic, so a
  DROP never sends a second copy.
- **De-duplication by (source, id)**: a publish of a pair this bus already sent is skipped;
  each subscriber skips pairs it already handled (bounded LRUs). A dead letter shares its
  event's pair, so it is told apart by its topic and group (`dedup_key`).
- **Ordered subscriptions** (``ordered=True``): each stream is handled one event at a time in
  arrival order, and an ordered group's events all go to its first member. A RETRY or a
  crashed subscriber is redelivered by the sidecar in whatever order the component keeps:
  the port's guarantee (a failed or orphaned event before anything newer) holds across
  restarts only with a component that has one message in flight, ``maxAckPending: 1`` on
  ``pubsub.jetstream`` (component-wide: give order-sensitive topics their own component;
  the rendered ``pubsub`` component keeps 1000 for throughput).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
from collections import OrderedDict
from collections.abc import Hashable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from dapr.aio.clients import DaprClient
from dapr.aio.clients.health import DaprHealth
from dapr.common.pubsub.subscription import (
    StreamCancelledError,
    StreamInactiveError,
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
from virtufin.envelope import CONTENT_TYPE_STRUCTURED, Envelope, from_dict, to_dict
from virtufin.errors import BusError, EnvelopeError, PublishRejectedError
from virtufin.lanes import validate_pattern

__all__ = ["SAVED_EXTENSION", "DaprBus", "decode_delivery", "encode_for_dapr"]

log = logging.getLogger(__name__)

SAVED_EXTENSION: Final = "vfdapr"
"""The extension carrying what the sidecar would change or lose (see the module docstring)."""
_DAPR_OWNED: Final = ("topic", "pubsubname", "traceid", "traceparent", "tracestate")
_DEDUP_WINDOW: Final = 100_000
_TRANSIENT: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
_DEAD_LETTER_SOURCE: Final = topics.source_urn("bus")
_PUBLISH_TRACEPARENT: ContextVar[str | None] = ContextVar("dapr_publish_traceparent", default=None)


# --------------------------------------------------------------------------- wire format


def _is_content_type(content_type: str, expected: str) -> bool:
    """Dapr's (components-contrib ``contenttype``) test, parameters after ``;`` ignored."""
    lower = content_type.lower()
    return lower == expected or (lower.partition(";")[0] == expected and ";" in lower)


def _dapr_carries_as_json(content_type: str) -> bool:
    return _is_content_type(content_type, "application/json") or _is_content_type(
        content_type, CONTENT_TYPE_STRUCTURED
    )


def _dapr_carries_as_text(content_type: str) -> bool:
    return content_type.lower().startswith("text/") or _is_content_type(
        content_type, "application/xml"
    )


def encode_for_dapr(envelope: Envelope) -> bytes:
    """The structured CloudEvent sent to the sidecar, with ``vfdapr`` where it is needed.

    Raises:
        EnvelopeError: the data is not JSON-serialisable.
    """
    obj = to_dict(envelope)
    saved: dict[str, Any] = {name: obj[name] for name in _DAPR_OWNED if name in obj}
    if envelope.time is None:
        saved["time"] = None  # newer sidecars stamp a missing time
    content_type = envelope.datacontenttype or ""
    if "data_base64" in obj:
        saved["data"] = "bytes"
    elif "data" in obj:
        data = obj["data"]
        text_ok = _dapr_carries_as_text(content_type) and isinstance(data, str) and data != ""
        if not (_dapr_carries_as_json(content_type) or text_ok):
            try:
                raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise EnvelopeError("data", f"is not JSON-serialisable ({exc})") from None
            obj["data_base64"] = base64.b64encode(raw.encode()).decode("ascii")
            del obj["data"]
            saved["data"] = "json"
    if saved:
        obj[SAVED_EXTENSION] = json.dumps(saved, separators=(",", ":"), ensure_ascii=False)
    try:
        body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EnvelopeError("data", f"is not JSON-serialisable ({exc})") from None
    return body.encode()


def _extension_value(name: str, value: Any) -> Any:
    """Undo protobuf ``Struct``'s numbers-are-doubles for CloudEvents integers."""
    if isinstance(value, float):
        if not value.is_integer():
            raise EnvelopeError(
                name, f"extension values are strings, integers or booleans: {value}"
            )
        return int(value)
    return value


def decode_delivery(message: Any) -> tuple[Envelope, str]:
    """The envelope and concrete topic of one delivered SDK ``SubscriptionMessage``.

    Raises:
        EnvelopeError: the event is not a valid Virtufin envelope.
    """
    extensions = dict(message.extensions() or {})
    saved_text = extensions.pop(SAVED_EXTENSION, None)
    delivered_topic = extensions.get("topic")
    topic = delivered_topic if isinstance(delivered_topic, str) else message.topic()
    for name in _DAPR_OWNED:
        extensions.pop(name, None)
    saved: dict[str, Any] = {}
    if saved_text is not None:
        try:
            saved = json.loads(saved_text)
        except (TypeError, ValueError):
            raise EnvelopeError(SAVED_EXTENSION, "is not a JSON object") from None
        if not isinstance(saved, dict):
            raise EnvelopeError(SAVED_EXTENSION, "is not a JSON object")
    obj: dict[str, Any] = {
        "id": message.id(),
        "source": message.source(),
        "type": message.type(),
        "specversion": message.spec_version(),
    }
    content_type: str = message.data_content_type() or ""
    if content_type:
        obj["datacontenttype"] = content_type
    for name, value in extensions.items():
        obj[name] = _extension_value(name, value)
    data_form = saved.pop("data", None)
    for name, value in saved.items():
        if value is None:
            obj.pop(name, None)
        else:
            obj[name] = value
    raw: bytes = bytes(message.raw_data() or b"")
    try:
        if data_form == "bytes":
            obj["data_base64"] = base64.b64encode(raw).decode("ascii")
        elif data_form == "json":
            obj["data"] = json.loads(raw)
        elif raw:
            if _dapr_carries_as_json(content_type):
                obj["data"] = json.loads(raw)
            elif _dapr_carries_as_text(content_type):
                obj["data"] = raw.decode("utf-8")
            else:
                obj["data_base64"] = base64.b64encode(raw).decode("ascii")
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise EnvelopeError("data", f"does not match its content type ({exc})") from None
    return from_dict(obj), topic


def _raw_record(message: Any) -> dict[str, Any]:
    """What arrived, as JSON, for the dead-letter record of an event that did not decode."""
    return {
        "id": message.id(),
        "source": message.source(),
        "type": message.type(),
        "specversion": message.spec_version(),
        "datacontenttype": message.data_content_type(),
        "subscription": message.topic(),
        "extensions": dict(message.extensions() or {}),
        "data_base64": base64.b64encode(bytes(message.raw_data() or b"")).decode("ascii"),
    }


# --------------------------------------------------------------------------- plumbing


class _TraceContext(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sends the published envelope's ``traceparent`` as gRPC metadata, as daprd expects."""

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        traceparent = _PUBLISH_TRACEPARENT.get()
        if traceparent is not None:
            pairs = [*(client_call_details.metadata or ()), ("traceparent", traceparent)]
            client_call_details = client_call_details._replace(metadata=grpc.aio.Metadata(*pairs))
        return await continuation(client_call_details, request)


class _Window:
    """A bounded set (oldest forgotten first)."""

    def __init__(self, size: int) -> None:
        self._items: OrderedDict[Hashable, None] = OrderedDict()
        self._size = size

    def __contains__(self, item: Hashable) -> bool:
        return item in self._items

    def add(self, item: Hashable) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        if len(self._items) > self._size:
            self._items.popitem(last=False)


@dataclass(eq=False)
class _Member:
    handler: AsyncHandler
    max_deliveries: int


@dataclass(eq=False)
class _Consumer:
    """One logical subscriber of a pattern: a plain subscription, or a group's members."""

    group: str | None
    window: int
    members: list[_Member] = field(default_factory=list)
    cursor: itertools.count[int] = field(default_factory=itertools.count)
    done: _Window = field(init=False)
    failures: OrderedDict[Hashable, tuple[int, str]] = field(default_factory=OrderedDict)
    ordered: bool = False

    def __post_init__(self) -> None:
        self.done = _Window(self.window)

    def pick(self) -> _Member:
        if self.ordered:
            return self.members[0]
        return self.members[next(self.cursor) % len(self.members)]

    def failed(self, key: Hashable, attempt: int, reason: str) -> None:
        self.failures[key] = (attempt, reason)
        if len(self.failures) > self.window:
            self.failures.popitem(last=False)

    def finish(self, key: Hashable) -> None:
        self.failures.pop(key, None)
        self.done.add(key)


@dataclass(eq=False)
class _Route:
    """One Dapr streaming subscription (one pattern) and its local consumers."""

    pattern: str
    stream: Any
    consumers: list[_Consumer] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    closing: bool = False


class _DaprSubscription(Subscription):
    def __init__(self, bus: DaprBus, route: _Route, consumer: _Consumer, member: _Member) -> None:
        self.pattern = route.pattern
        self.group = consumer.group
        self._bus = bus
        self._route = route
        self._consumer = consumer
        self._member = member

    async def unsubscribe(self) -> None:
        await self._bus._remove(self._route, self._consumer, self._member)


# --------------------------------------------------------------------------- the bus


class DaprBus(EventBus):
    """Dapr adapter of the bus port (see the module docstring for the design).

    Args:
        pubsub_name: the Dapr pub/sub component (``settings.pubsub_name``).
        validator: lane rules checked on publish (default: topic rules, no registry).
        dapr_address: the sidecar's gRPC address; default: the SDK's settings
            (``DAPR_GRPC_ENDPOINT``, else ``DAPR_RUNTIME_HOST``:``DAPR_GRPC_PORT``).
        app_port: unused: streaming subscriptions need no app port. Accepted so that wiring
            written for the app-callback variant keeps working.
        dedup_window: how many (source, id) pairs each de-duplication LRU remembers.

    Example:
        >>> bus = DaprBus(pubsub_name="pubsub")  # doctest: +SKIP
        >>> await bus.start()  # waits for the sidecar's health endpoint
    """

    name = "dapr"

    def __init__(
        self,
        *,
        pubsub_name: str,
        validator: LaneValidator | None = None,
        dapr_address: str | None = None,
        app_port: int | None = None,
        dedup_window: int = _DEDUP_WINDOW,
    ) -> None:
        self.pubsub_name = pubsub_name
        self.validator = validator if validator is not None else LaneValidator()
        self.dapr_address = dapr_address
        self.dead_letters = 0
        if app_port is not None:
            log.info("DaprBus: app_port %d unused (streaming subscriptions need none)", app_port)
        self._dedup_window = dedup_window
        self._published = _Window(dedup_window)
        self._undecodable = _Window(1024)
        self._client: Any = None
        self._start_lock = asyncio.Lock()
        self._routes_lock = asyncio.Lock()
        self._routes: dict[str, _Route] = {}

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Wait for the sidecar's health endpoint, then connect (idempotent).

        Raises:
            BusError: the sidecar did not become healthy within ``DAPR_HEALTH_TIMEOUT``.
        """
        if self._client is not None:
            return
        async with self._start_lock:
            if self._client is not None:
                return
            try:
                await DaprHealth.wait_for_sidecar()
            except TimeoutError as exc:
                raise BusError("", f"the Dapr sidecar is not healthy: {exc}") from None
            try:
                # The constructor repeats the health check, blocking: instant now.
                self._client = DaprClient(address=self.dapr_address, interceptors=[_TraceContext()])
            except Exception as exc:
                raise BusError("", f"cannot connect to the Dapr sidecar: {exc}") from None

    async def close(self) -> None:
        for route in list(self._routes.values()):
            await self._close_route(route)
        self._routes.clear()
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    # ---------------------------------------------------------------- publish

    async def publish(self, topic: str, envelope: Envelope) -> None:
        await self.validator.check(topic, envelope)
        key = (envelope.source, envelope.id)
        if key in self._published:
            return
        await self._send(topic, envelope)
        self._published.add(key)

    async def _send(self, topic: str, envelope: Envelope) -> None:
        try:
            body = encode_for_dapr(envelope)
        except EnvelopeError as exc:
            raise PublishRejectedError(topic, str(exc)) from None
        await self.start()
        token = _PUBLISH_TRACEPARENT.set(envelope.traceparent)
        try:
            await self._client.publish_event(
                pubsub_name=self.pubsub_name,
                topic_name=topic,
                data=body,
                data_content_type=CONTENT_TYPE_STRUCTURED,
            )
        except grpc.RpcError as exc:  # the SDK's DaprGrpcError is one
            code, details = exc.code(), exc.details()
            if code in _TRANSIENT:
                raise BusError(
                    topic, f"Dapr sidecar unavailable ({code.name}): {details}"
                ) from None
            raise PublishRejectedError(topic, f"Dapr refused ({code.name}): {details}") from None
        except Exception as exc:  # a closed channel, …: not Dapr's answer
            raise BusError(topic, f"publishing through Dapr failed: {exc}") from None
        finally:
            _PUBLISH_TRACEPARENT.reset(token)

    # ---------------------------------------------------------------- subscribe

    async def subscribe(
        self,
        pattern: str,
        handler: AsyncHandler,
        *,
        group: str | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        ordered: bool = False,
    ) -> Subscription:
        validate_pattern(pattern)
        await self.start()
        async with self._routes_lock:
            route = self._routes.get(pattern)
            if route is None:
                route = _Route(pattern, await self._open_stream(pattern))
                self._routes[pattern] = route
                route.task = asyncio.create_task(self._pump(route), name=f"dapr:{pattern}")
            consumer = next(
                (c for c in route.consumers if group is not None and c.group == group), None
            )
            if consumer is None:
                consumer = _Consumer(group, self._dedup_window)
                route.consumers.append(consumer)
            consumer.ordered = consumer.ordered or ordered
            member = _Member(handler, max_deliveries)
            consumer.members.append(member)
        return _DaprSubscription(self, route, consumer, member)

    async def _open_stream(self, pattern: str) -> Any:
        try:
            return await self._client.subscribe(pubsub_name=self.pubsub_name, topic=pattern)
        except grpc.RpcError as exc:
            raise BusError(pattern, f"Dapr refused the subscription: {exc.details()}") from None
        except Exception as exc:
            raise BusError(pattern, f"subscribing through Dapr failed: {exc}") from None

    async def _remove(self, route: _Route, consumer: _Consumer, member: _Member) -> None:
        async with self._routes_lock:
            if member in consumer.members:
                consumer.members.remove(member)
            if not consumer.members and consumer in route.consumers:
                route.consumers.remove(consumer)
            if route.consumers or self._routes.get(route.pattern) is not route:
                return
            del self._routes[route.pattern]
        await self._close_route(route)

    async def _close_route(self, route: _Route) -> None:
        route.closing = True
        task = route.task
        if task is asyncio.current_task():
            return  # unsubscribed from its own handler: the pump closes the stream on its way out
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await route.stream.close()

    # ---------------------------------------------------------------- delivery

    async def _pump(self, route: _Route) -> None:
        stream = route.stream
        while not route.closing:
            try:
                message = await stream.next_message()
            except (StreamInactiveError, StreamCancelledError):
                return
            except Exception as exc:
                log.error("Dapr subscription %s lost (%s); resubscribing", route.pattern, exc)
                await self._reopen(route)
                stream = route.stream
                continue
            if message is None:
                continue
            outcome = await self._handle(route, message)
            if outcome == "retry":
                await stream.respond_retry(message)
            elif outcome == "drop":
                await stream.respond_drop(message)
            else:
                await stream.respond_success(message)
        if route.task is asyncio.current_task():
            await stream.close()

    async def _reopen(self, route: _Route) -> None:
        """Replace a stream the SDK gave up on, with back-off, until it works or is closed."""
        with contextlib.suppress(Exception):
            await route.stream.close()
        delay = 0.5
        while not route.closing:
            try:
                route.stream = await self._open_stream(route.pattern)
                return
            except BusError as exc:
                log.warning("resubscribing to %s failed: %s", route.pattern, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _handle(self, route: _Route, message: Any) -> str:
        """Run the route's subscribers on one event; the answer for the sidecar."""
        try:
            envelope, topic = decode_delivery(message)
        except EnvelopeError as exc:
            return await self._dead_letter_undecodable(message, f"EnvelopeError: {exc}")
        key = dedup_key(envelope, topic)
        pending = False
        for consumer in list(route.consumers):
            if not consumer.members or key in consumer.done:
                continue
            attempt, reason = consumer.failures.get(key, (0, ""))
            attempt += 1
            member = consumer.pick()
            if attempt <= member.max_deliveries:
                try:
                    await member.handler(envelope, Delivery(topic, attempt, consumer.group))
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    if attempt < member.max_deliveries:
                        consumer.failed(key, attempt, reason)
                        pending = True
                        continue
                else:
                    consumer.finish(key)
                    continue
            attempts = min(attempt, member.max_deliveries)
            if not await self._dead_letter(envelope, topic, reason, attempts, consumer.group):
                consumer.failed(key, attempts, reason)
                pending = True
                continue
            consumer.finish(key)
        return "retry" if pending else "success"

    async def _dead_letter(
        self, envelope: Envelope, topic: str, reason: str, attempts: int, group: str | None
    ) -> bool:
        """Publish the failed event to ``bus.deadletter``; False if that publish failed."""
        log.warning(
            "dead-lettering %s from %s after %d attempts: %s", envelope.id, topic, attempts, reason
        )
        if topic == topics.DEAD_LETTER:
            return True  # a dead letter's own handler failed: nowhere further to send it
        letter = dead_letter_envelope(
            envelope, topic=topic, reason=reason, attempts=attempts, group=group
        )
        try:
            await self._send(topics.DEAD_LETTER, letter)
        except BusError as exc:
            log.error("could not dead-letter %s: %s", envelope.id, exc)
            return False
        self.dead_letters += 1
        return True

    async def _dead_letter_undecodable(self, message: Any, reason: str) -> str:
        record = _raw_record(message)
        published_on = record["extensions"].get("topic")
        topic = published_on if isinstance(published_on, str) else message.topic()
        key = (record["source"], record["id"], topic)
        if key not in self._undecodable:
            log.warning("dead-lettering an undecodable event %s: %s", record["id"], reason)
            letter = Envelope.new(
                type=topics.EventTypes.DEAD_LETTER,
                source=_DEAD_LETTER_SOURCE,
                data=record,
                extensions={
                    "dltopic": topic,
                    "dlreason": reason[:2000],
                    "dlattempts": 1,
                    "dlgroup": "",
                },
            )
            try:
                await self._send(topics.DEAD_LETTER, letter)
            except BusError as exc:
                log.error("could not dead-letter undecodable %s: %s", record["id"], exc)
                return "retry"
            self._undecodable.add(key)
            self.dead_letters += 1
        return "drop"
