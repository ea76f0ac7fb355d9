"""`DaprSidecarStandIn`: an in-process stand-in for the Dapr sidecar (daprd). Tests only.

No daprd can be installed on these machines (DESIGN.md §5), so the Dapr adapters are tested
against this stand-in. It is a ``grpc.aio`` server implementing the SDK's own generated
servicer, ``dapr.proto.runtime.v1.Dapr``, for the calls the adapters make, and it plays
daprd's part towards the app, on streaming subscriptions and on the app callback. What it
models, after daprd (``pkg/api/grpc``, ``pkg/runtime/pubsub``, ``pkg/runtime/subscription``)
and components-contrib (``pubsub/envelope.go``, ``contenttype``, ``pubsub.jetstream``):

- **PublishEvent**: daprd's validation and error codes; ``rawPayload`` metadata stores the
  bytes as they are; ``application/cloudevents+json`` goes through ``FromCloudEvent`` (sets
  ``topic``, ``pubsubname``, ``traceid``/``traceparent``/``tracestate`` from the publish
  span, defaults ``source``/``type``/``specversion``); anything else is wrapped by
  ``NewCloudEventsEnvelope`` (random id, app id as source, ``com.dapr.event.sent``). A
  publish span continues the caller's ``traceparent`` gRPC metadata, as daprd's tracing does.
- **The broker** routes a topic to subscriptions whose topic matches it with NATS subject
  wildcards (``*``, ``>``), as ``pubsub.jetstream`` does (the consumer's filter subject);
  ``subject_wildcards=False`` gives exact names, as ``pubsub.redis`` does.
- **SubscribeTopicEventsAlpha1** (the SDK's ``DaprClient.subscribe``): the initial request,
  the initial response, then one ``TopicEventRequest`` at a time per subscription, built as
  daprd's ``GRPCEnvelopeFromSubscriptionMessage`` builds it (``data`` re-marshalled for JSON
  content types, raw for ``text/*``, decoded ``data_base64``; every other attribute in
  ``extensions``), ``topic`` = the subscription's topic, as ``pubsub.jetstream`` reports it.
  The app's answer: SUCCESS acks; RETRY (or an unknown status, or no answer in time) retries
  up to `retries` times (daprd's resiliency policy), then goes to the subscription's dead-letter
  topic, or, without one, back to the component, which redelivers it up to `redeliveries`
  times (``maxDeliver``) and then gives up; DROP acks, and forwards to the dead-letter topic
  when one is set. Dead-lettering republishes the broker bytes unchanged, as daprd does.
- **State**: SaveState / GetState / GetBulkState / DeleteState / DeleteBulkState /
  ExecuteStateTransaction with etags (a counter per store, like Redis' versions): a given etag
  must match, ``CONCURRENCY_FIRST_WRITE`` without an etag refuses an existing key; a mismatch is
  ABORTED with daprd's "possible etag mismatch" text, except in a transaction, where daprd
  answers INTERNAL with the same text. Transactions are all-or-nothing, checked op by op.
- **HTTP health**: ``GET /v1.0/healthz[/outbound]`` answers 204 on a second port (from a
  thread, because the SDK's client checks it with a blocking call), since every SDK client
  polls it before connecting. `environ()` gives the ``DAPR_*`` variables that point the SDK here.

- **The app callback** (``connect_app``): for apps that subscribe programmatically
  (``dapr.ext.grpc.App``), it reads ``ListTopicSubscriptions`` once, as daprd does at app
  start-up, and delivers with ``AppCallback.OnTopicEvent``: the same request and answers as a
  stream, plus daprd's gRPC-channel rules (UNIMPLEMENTED drops, other errors retry).
  ``DaprBus`` itself uses streams (see ``virtufin/bus/dapr.py`` for why).

Not modelled: bulk publish/subscribe, routing rules (CEL), TTLs, scopes beyond `deny_publish`,
resiliency back-off, key prefixes, the HTTP API. Everything recorded is kept for assertions:
`published` (the requests as received), `broker` (what reached the broker), `deliveries`
(each ``TopicEventRequest`` sent and the answer), `undeliverable`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import grpc
from dapr.proto import api_service_v1, api_v1, appcallback_service_v1, appcallback_v1, common_v1
from google.protobuf import empty_pb2

__all__ = [
    "BrokerMessage",
    "DaprSidecarStandIn",
    "DeliveryRecord",
    "nats_match",
    "topic_event_request",
]

log = logging.getLogger(__name__)

CLOUDEVENT_CONTENT_TYPE: Final = "application/cloudevents+json"
DEFAULT_CLOUDEVENT_TYPE: Final = "com.dapr.event.sent"
DEFAULT_CLOUDEVENT_SOURCE: Final = "Dapr"
DEFAULT_DATA_CONTENT_TYPE: Final = "text/plain"
_DUPLICATE_KEYS: Final = frozenset(
    {"id", "source", "datacontenttype", "type", "specversion", "data", "data_base64"}
)
_NO_SPAN: Final = f"00-{'0' * 32}-{'0' * 16}-00"
_Status = appcallback_v1.TopicEventResponse.TopicEventResponseStatus
_STATUS_NAMES: Final = {_Status.SUCCESS: "success", _Status.RETRY: "retry", _Status.DROP: "drop"}
_FIRST_WRITE: Final = common_v1.StateOptions.StateConcurrency.CONCURRENCY_FIRST_WRITE


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class BrokerMessage:
    """What reached the broker: the bytes daprd handed to the pub/sub component."""

    pubsub: str
    topic: str
    data: bytes
    metadata: Mapping[str, str] = field(default_factory=dict)

    def cloud_event(self) -> dict[str, Any]:
        """The stored bytes as JSON (they are a CloudEvent unless published raw)."""
        parsed: dict[str, Any] = json.loads(self.data)
        return parsed


@dataclass(frozen=True)
class DeliveryRecord:
    """One `TopicEventRequest` sent to the app, and its answer (or what went wrong)."""

    subscription_topic: str
    request: appcallback_v1.TopicEventRequest
    outcome: str  # success | retry | drop | unknown | timeout | closed | error | unimplemented


class _DaprError(Exception):
    """A gRPC status daprd would answer with."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _EtagMismatch(Exception):
    """components-contrib's ``state.ETagError`` of kind mismatch."""


# --------------------------------------------------------------------------- pure helpers


def nats_match(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, token in enumerate(pat):
        if token == ">" and i == len(pat) - 1:
            return len(sub) > i
        if i >= len(sub) or (token != "*" and token != sub[i]):
            return False
    return len(pat) == len(sub)


def _is_content_type(content_type: str, expected: str) -> bool:
    lower = content_type.lower()
    if lower == expected:
        return True
    head, sep, _ = lower.partition(";")
    return bool(sep) and head == expected


def _is_json(content_type: str) -> bool:
    return _is_content_type(content_type, "application/json")


def _is_cloud_event(content_type: str) -> bool:
    return _is_content_type(content_type, CLOUDEVENT_CONTENT_TYPE)


def _is_string(content_type: str) -> bool:
    return content_type.lower().startswith("text/") or _is_content_type(
        content_type, "application/xml"
    )


def _is_binary(content_type: str) -> bool:
    return _is_content_type(content_type, "application/octet-stream")


def _parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``."""
    if text in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if text in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{text}": invalid syntax')


def _raw_payload(metadata: Mapping[str, str]) -> bool:
    value = metadata.get("rawPayload", "")
    return _parse_bool(value) if value else False


def _go_json(value: Any) -> bytes:
    """``json.Marshal`` of a decoded value: compact, map keys sorted."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def _new_cloud_event(
    *,
    event_id: str,
    source: str,
    event_type: str,
    topic: str,
    pubsub: str,
    content_type: str,
    data: bytes,
    traceparent: str,
    tracestate: str,
) -> dict[str, Any]:
    """components-contrib ``NewCloudEventsEnvelope``: wrap a payload that is no CloudEvent."""
    content_type = content_type or DEFAULT_DATA_CONTENT_TYPE
    event: dict[str, Any] = {
        "id": event_id or str(uuid.uuid4()),
        "specversion": "1.0",
        "datacontenttype": content_type,
        "source": source or DEFAULT_CLOUDEVENT_SOURCE,
        "type": event_type or DEFAULT_CLOUDEVENT_TYPE,
        "topic": topic,
        "pubsubname": pubsub,
        "traceid": traceparent,
        "traceparent": traceparent,
        "tracestate": tracestate,
    }
    if _is_json(content_type):
        try:
            event["data"] = json.loads(data)
        except ValueError:
            event["data"] = data.decode("utf-8", "replace")
    elif _is_binary(content_type):
        event["data_base64"] = base64.b64encode(data).decode("ascii")
    else:
        event["data"] = data.decode("utf-8", "replace")
    return event


def _from_cloud_event(
    data: bytes, *, topic: str, pubsub: str, traceparent: str, tracestate: str
) -> dict[str, Any]:
    """components-contrib ``FromCloudEvent``: the sidecar's fields win over the app's."""
    event = json.loads(data)
    if not isinstance(event, dict):
        raise ValueError(f"json: cannot unmarshal {type(event).__name__} into a map")
    event["traceid"] = traceparent
    event["traceparent"] = traceparent
    event["tracestate"] = tracestate
    event["topic"] = topic
    event["pubsubname"] = pubsub
    if event.get("source") is None:
        event["source"] = DEFAULT_CLOUDEVENT_SOURCE
    if event.get("type") is None:
        event["type"] = DEFAULT_CLOUDEVENT_TYPE
    if event.get("specversion") is None:
        event["specversion"] = "1.0"
    return event


def _from_raw_payload(data: bytes, *, topic: str, pubsub: str) -> dict[str, Any]:
    """components-contrib ``FromRawPayload`` (subscriber side of ``rawPayload``)."""
    return {
        "id": str(uuid.uuid4()),
        "specversion": "1.0",
        "datacontenttype": "application/octet-stream",
        "source": DEFAULT_CLOUDEVENT_SOURCE,
        "type": DEFAULT_CLOUDEVENT_TYPE,
        "topic": topic,
        "pubsubname": pubsub,
        "data_base64": base64.b64encode(data).decode("ascii"),
    }


def topic_event_request(
    event: Mapping[str, Any], *, topic: str, pubsub: str, path: str = ""
) -> appcallback_v1.TopicEventRequest:
    """daprd's ``GRPCEnvelopeFromSubscriptionMessage``: a CloudEvent map as the app sees it.

    Raises:
        ValueError: the event's data cannot be carried (daprd answers with a retriable error).
    """

    def prop(name: str) -> str:
        value = event.get(name)
        return value if isinstance(value, str) else ""

    request = appcallback_v1.TopicEventRequest(
        id=prop("id"),
        source=prop("source"),
        type=prop("type"),
        spec_version=prop("specversion"),
        data_content_type=prop("datacontenttype"),
        topic=topic,
        pubsub_name=pubsub,
        path=path,
    )
    if event.get("data_base64") is not None:
        encoded = event["data_base64"]
        if not isinstance(encoded, str):
            raise ValueError("unexpected data in the CloudEvent envelope")
        try:
            request.data = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"unable to base64 decode data_base64: {exc}") from None
    elif event.get("data") is not None:
        data = event["data"]
        content_type = request.data_content_type
        if _is_string(content_type):
            if not isinstance(data, str):
                raise ValueError("unexpected data in the CloudEvent envelope")
            request.data = data.encode()
        elif _is_json(content_type) or _is_cloud_event(content_type):
            request.data = _go_json(data)
    request.extensions.update({k: v for k, v in event.items() if k not in _DUPLICATE_KEYS})
    return request


# --------------------------------------------------------------------------- state


@dataclass
class _Store:
    """One state store component: key → (value bytes, etag)."""

    items: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def set(self, item: common_v1.StateItem) -> None:
        current = self.items.get(item.key)
        if item.HasField("etag"):
            if current is None or current[1] != item.etag.value:
                raise _EtagMismatch(f"failed to set key {item.key}")
        elif item.options.concurrency == _FIRST_WRITE and current is not None:
            raise _EtagMismatch(f"failed to set key {item.key}: first-write: key exists")
        self.items[item.key] = (bytes(item.value), str(next(self.versions)))

    def delete(self, key: str, etag: common_v1.Etag | None) -> None:
        current = self.items.get(key)
        if etag is not None and (current is None or current[1] != etag.value):
            raise _EtagMismatch(f"failed to delete key {key}")
        self.items.pop(key, None)


def _check_key(key: str) -> None:
    if "||" in key:
        raise _DaprError(
            grpc.StatusCode.INVALID_ARGUMENT, f"input key/keyPrefix '{key}' can't contain '||'"
        )


# --------------------------------------------------------------------------- subscriptions


@dataclass(eq=False)
class _Queued:
    message: BrokerMessage
    component_deliveries: int = 0


@dataclass(eq=False)
class _Subscriber:
    """One subscription: an open ``SubscribeTopicEventsAlpha1`` stream, or, with `app`, a
    programmatic subscription delivered by calling the app's ``OnTopicEvent``."""

    pubsub: str
    topic: str
    metadata: dict[str, str]
    dead_letter_topic: str
    app: Any = None
    path: str = ""
    queue: asyncio.Queue[_Queued] = field(default_factory=asyncio.Queue)
    outbox: asyncio.Queue[appcallback_v1.TopicEventRequest] = field(default_factory=asyncio.Queue)
    waiting: dict[str, asyncio.Future[int]] = field(default_factory=dict)
    closed: bool = False
    task: asyncio.Task[None] | None = None


class _HealthHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.send_response(204 if path in ("/v1.0/healthz", "/v1.0/healthz/outbound") else 404)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


# --------------------------------------------------------------------------- the stand-in


class DaprSidecarStandIn(api_service_v1.DaprServicer):  # type: ignore[misc]
    """A stand-in for daprd: the Dapr gRPC API in process, plus its HTTP health endpoint.

    Args:
        pubsubs: names of the pub/sub components it has.
        state_stores: names of the state store components it has.
        app_id: the app id (source of CloudEvents it wraps).
        subject_wildcards: route ``*``/``>`` like ``pubsub.jetstream`` (else exact names).
        retries: resiliency retries after a RETRY before giving up on a component delivery.
        redeliveries: how often the component redelivers a message nobody acknowledged.
        response_timeout_s: how long to wait for the app's answer to one event.
        tracing: give publishes a span (else daprd's all-zero trace context).

    Example:
        >>> async with DaprSidecarStandIn() as sidecar:  # doctest: +SKIP
        ...     monkeypatch.setenv("DAPR_HTTP_ENDPOINT", sidecar.http_endpoint)
        ...     bus = DaprBus(pubsub_name="pubsub", dapr_address=sidecar.address)
    """

    def __init__(
        self,
        *,
        pubsubs: tuple[str, ...] = ("pubsub",),
        state_stores: tuple[str, ...] = ("statestore",),
        app_id: str = "standin-app",
        subject_wildcards: bool = True,
        retries: int = 2,
        redeliveries: int = 3,
        response_timeout_s: float = 30.0,
        tracing: bool = True,
    ) -> None:
        self.pubsubs = pubsubs
        self.app_id = app_id
        self.subject_wildcards = subject_wildcards
        self.retries = retries
        self.redeliveries = redeliveries
        self.response_timeout_s = response_timeout_s
        self.tracing = tracing
        self.stores: dict[str, _Store] = {name: _Store() for name in state_stores}
        self.published: list[api_v1.PublishEventRequest] = []
        self.broker: list[BrokerMessage] = []
        self.deliveries: list[DeliveryRecord] = []
        self.undeliverable: list[tuple[BrokerMessage, str]] = []
        self.state_calls: list[str] = []
        self._denied: set[str] = set()
        self._subscribers: list[_Subscriber] = []
        self._app_channels: list[grpc.aio.Channel] = []
        self._server: grpc.aio.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self.grpc_port = 0
        self.http_port = 0

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> DaprSidecarStandIn:
        """Listen on free ports of 127.0.0.1 (gRPC API and HTTP health)."""
        self._server = grpc.aio.server()
        api_service_v1.add_DaprServicer_to_server(self, self._server)
        self.grpc_port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _HealthHandler)
        self._http.daemon_threads = True
        self.http_port = self._http.server_address[1]
        self._http_thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._http_thread.start()
        return self

    async def stop(self) -> None:
        """Close every stream and both listeners."""
        tasks = [sub.task for sub in self._subscribers if sub.task is not None]
        for sub in list(self._subscribers):
            self._close_subscriber(sub)
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in self._app_channels:
            await channel.close()
        self._app_channels.clear()
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        if self._http is not None:
            http, thread = self._http, self._http_thread
            self._http = self._http_thread = None
            await asyncio.to_thread(http.shutdown)
            http.server_close()
            if thread is not None:
                thread.join(timeout=5)

    async def __aenter__(self) -> DaprSidecarStandIn:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def address(self) -> str:
        """The gRPC address, as `DaprClient(address=…)` takes it."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """The HTTP endpoint the SDK polls for health (``DAPR_HTTP_ENDPOINT``)."""
        return f"http://127.0.0.1:{self.http_port}"

    def environ(self) -> dict[str, str]:
        """The ``DAPR_*`` variables that point the SDK at this stand-in."""
        return {"DAPR_GRPC_ENDPOINT": self.address, "DAPR_HTTP_ENDPOINT": self.http_endpoint}

    # ------------------------------------------------------------ test controls

    def deny_publish(self, topic: str) -> None:
        """Refuse publishing to `topic` as daprd does for a topic outside the app's scopes."""
        self._denied.add(topic)

    @property
    def subscriptions(self) -> list[tuple[str, str, str]]:
        """Open streaming subscriptions as (pubsub, topic, dead-letter topic)."""
        return [(s.pubsub, s.topic, s.dead_letter_topic) for s in self._subscribers]

    async def connect_app(self, address: str) -> list[tuple[str, str, str]]:
        """Act as daprd when an app-callback app starts: ask ``ListTopicSubscriptions`` once.

        Each subscription it lists is then delivered by calling the app's
        ``AppCallback.OnTopicEvent`` with the same `TopicEventRequest` a stream would get
        (``path`` = the subscription's default route; routing rules are not evaluated).

        Returns:
            The subscriptions taken, as (pubsub, topic, dead-letter topic).
        """
        channel = grpc.aio.insecure_channel(address)
        self._app_channels.append(channel)
        app = appcallback_service_v1.AppCallbackStub(channel)
        # like daprd, wait for the app's port to open before asking
        listed = await app.ListTopicSubscriptions(
            empty_pb2.Empty(), timeout=10, wait_for_ready=True
        )
        taken = []
        for item in listed.subscriptions:
            if item.pubsub_name not in self.pubsubs:
                log.warning("stand-in: app subscribes to unknown pubsub %s", item.pubsub_name)
                continue
            sub = _Subscriber(
                pubsub=item.pubsub_name,
                topic=item.topic,
                metadata=dict(item.metadata),
                dead_letter_topic=item.dead_letter_topic,
                app=app,
                path=item.routes.default,
            )
            self._subscribers.append(sub)
            sub.task = asyncio.create_task(self._deliver_loop(sub), name=f"standin:{sub.topic}")
            taken.append((sub.pubsub, sub.topic, sub.dead_letter_topic))
        return taken

    def broker_publish(
        self, pubsub: str, topic: str, data: bytes, metadata: Mapping[str, str] | None = None
    ) -> None:
        """Put bytes on the broker directly, as another client of NATS would."""
        self._to_broker(BrokerMessage(pubsub, topic, bytes(data), dict(metadata or {})))

    async def wait_until(self, predicate: Callable[[], bool], *, within_s: float = 5.0) -> None:
        """Poll `predicate` until it holds; fail with AssertionError after `within_s`."""
        deadline = time.monotonic() + within_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"stand-in: condition not met within {within_s}s")
            await asyncio.sleep(0.01)

    def state(self, store: str = "statestore") -> dict[str, tuple[bytes, str]]:
        """A copy of a store's items: key → (value bytes, etag)."""
        return dict(self.stores[store].items)

    # ------------------------------------------------------------ pub/sub API

    async def PublishEvent(
        self, request: api_v1.PublishEventRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        self.published.append(api_v1.PublishEventRequest.FromString(request.SerializeToString()))
        try:
            self._publish(request, dict(context.invocation_metadata() or ()))
        except _DaprError as exc:
            await context.abort(exc.code, exc.details)
        return empty_pb2.Empty()

    def _publish(self, request: api_v1.PublishEventRequest, grpc_metadata: dict[str, Any]) -> None:
        pubsub, topic, meta = request.pubsub_name, request.topic, dict(request.metadata)
        if not self.pubsubs:
            raise _DaprError(grpc.StatusCode.FAILED_PRECONDITION, "no pubsub is configured")
        if not pubsub:
            raise _DaprError(grpc.StatusCode.INVALID_ARGUMENT, "pubsub name is empty")
        if pubsub not in self.pubsubs:
            raise _DaprError(grpc.StatusCode.INVALID_ARGUMENT, f"pubsub {pubsub} is not found")
        if not topic:
            raise _DaprError(grpc.StatusCode.INVALID_ARGUMENT, f"topic is empty in pubsub {pubsub}")
        try:
            raw = _raw_payload(meta)
        except ValueError as exc:
            raise _DaprError(
                grpc.StatusCode.INVALID_ARGUMENT, f"failed deserializing metadata: {exc}"
            ) from None
        data = bytes(request.data)
        if not raw:
            traceparent, tracestate = self._publish_span(grpc_metadata)
            try:
                if _is_cloud_event(request.data_content_type):
                    event = _from_cloud_event(
                        data,
                        topic=topic,
                        pubsub=pubsub,
                        traceparent=traceparent,
                        tracestate=tracestate,
                    )
                else:
                    event = _new_cloud_event(
                        event_id=meta.get("cloudevent.id", ""),
                        source=meta.get("cloudevent.source", self.app_id),
                        event_type=meta.get("cloudevent.type", ""),
                        topic=topic,
                        pubsub=pubsub,
                        content_type=request.data_content_type,
                        data=data,
                        traceparent=traceparent,
                        tracestate=tracestate,
                    )
            except ValueError as exc:
                raise _DaprError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"cannot create cloudevent: {exc}"
                ) from None
            data = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        if topic in self._denied:
            raise _DaprError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"topic {topic} is not allowed for app id {self.app_id}",
            )
        self._to_broker(BrokerMessage(pubsub, topic, data, meta))

    def _publish_span(self, grpc_metadata: Mapping[str, Any]) -> tuple[str, str]:
        """The publish span's W3C context: a child of the caller's, or a new trace."""
        if not self.tracing:
            return _NO_SPAN, ""
        parent = str(grpc_metadata.get("traceparent", ""))
        parts = parent.split("-")
        valid = len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16
        trace_id = parts[1] if valid else secrets.token_hex(16)
        flags = parts[3] if valid else "01"
        return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}", str(
            grpc_metadata.get("tracestate", "")
        )

    def _to_broker(self, message: BrokerMessage) -> None:
        self.broker.append(message)
        for sub in self._subscribers:
            if sub.pubsub != message.pubsub or sub.closed:
                continue
            hit = (
                nats_match(sub.topic, message.topic)
                if self.subject_wildcards
                else sub.topic == message.topic
            )
            if hit:
                sub.queue.put_nowait(_Queued(message))

    async def SubscribeTopicEventsAlpha1(
        self,
        request_iterator: AsyncIterator[api_v1.SubscribeTopicEventsRequestAlpha1],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[api_v1.SubscribeTopicEventsResponseAlpha1]:
        requests = request_iterator.__aiter__()
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            return
        error = self._check_initial(first)
        if error is not None:
            await context.abort(grpc.StatusCode.UNKNOWN, error)
        initial = first.initial_request
        sub = _Subscriber(
            pubsub=initial.pubsub_name,
            topic=initial.topic,
            metadata=dict(initial.metadata),
            dead_letter_topic=initial.dead_letter_topic,
        )
        self._subscribers.append(sub)
        sub.task = asyncio.create_task(self._deliver_loop(sub), name=f"standin:{sub.topic}")
        reader = asyncio.create_task(self._read_answers(requests, sub))
        try:
            yield api_v1.SubscribeTopicEventsResponseAlpha1(
                initial_response=api_v1.SubscribeTopicEventsResponseInitialAlpha1()
            )
            while True:
                getter = asyncio.ensure_future(sub.outbox.get())
                done, _ = await asyncio.wait({getter, reader}, return_when="FIRST_COMPLETED")
                if getter not in done:
                    getter.cancel()
                    break
                yield api_v1.SubscribeTopicEventsResponseAlpha1(event_message=getter.result())
        finally:
            reader.cancel()
            self._close_subscriber(sub)

    def _check_initial(self, first: api_v1.SubscribeTopicEventsRequestAlpha1) -> str | None:
        if not first.HasField("initial_request"):
            return "initial request is required"
        initial = first.initial_request
        if not initial.pubsub_name:
            return "pubsubName is required"
        if not initial.topic:
            return "topic is required"
        if initial.pubsub_name not in self.pubsubs:
            return f"pubsub {initial.pubsub_name} is not found"
        return None

    async def _read_answers(
        self, requests: AsyncIterator[api_v1.SubscribeTopicEventsRequestAlpha1], sub: _Subscriber
    ) -> None:
        with contextlib.suppress(grpc.RpcError, asyncio.CancelledError):
            async for message in requests:
                if not message.HasField("event_processed"):
                    log.warning("stand-in: duplicate initial request received; closing")
                    return
                answer = message.event_processed
                waiter = sub.waiting.get(answer.id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(answer.status.status)

    def _close_subscriber(self, sub: _Subscriber) -> None:
        sub.closed = True
        if sub in self._subscribers:
            self._subscribers.remove(sub)
        for waiter in sub.waiting.values():
            if not waiter.done():
                waiter.cancel()
        if sub.task is not None and not sub.task.done():
            sub.task.cancel()

    # ------------------------------------------------------------ delivery

    async def _deliver_loop(self, sub: _Subscriber) -> None:
        while not sub.closed:
            queued = await sub.queue.get()
            queued.component_deliveries += 1
            await self._deliver(sub, queued)

    async def _deliver(self, sub: _Subscriber, queued: _Queued) -> None:
        message = queued.message
        try:
            if _raw_payload(sub.metadata):
                event = _from_raw_payload(message.data, topic=sub.topic, pubsub=sub.pubsub)
            else:
                event = message.cloud_event()
                if not isinstance(event, dict):
                    raise ValueError("the message is not a CloudEvent object")
        except ValueError as exc:
            await self._give_up(sub, queued, f"error deserializing cloud event: {exc}")
            return
        try:
            request = topic_event_request(event, topic=sub.topic, pubsub=sub.pubsub, path=sub.path)
        except ValueError as exc:
            await self._give_up(sub, queued, str(exc))
            return
        for attempt in range(1 + self.retries):
            outcome = await self._send(sub, request)
            self.deliveries.append(DeliveryRecord(sub.topic, request, outcome))
            if outcome in ("success", "unimplemented"):  # daprd acks both (no dead letter)
                return
            if outcome == "drop":
                if sub.dead_letter_topic:
                    self._dead_letter(sub, message)
                return
            if outcome == "closed":
                return  # the stream is gone: the broker keeps the message for other consumers
            log.debug(
                "stand-in: attempt %d of %s on %s: %s", attempt + 1, request.id, sub.topic, outcome
            )
        await self._give_up(sub, queued, f"RETRY status returned from app for event {request.id}")

    async def _send(self, sub: _Subscriber, request: appcallback_v1.TopicEventRequest) -> str:
        if sub.closed:
            return "closed"
        if sub.app is not None:
            return await self._call_app(sub, request)
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        sub.waiting[request.id] = waiter
        try:
            await sub.outbox.put(request)
            status = await asyncio.wait_for(waiter, timeout=self.response_timeout_s)
        except TimeoutError:
            return "timeout"
        except asyncio.CancelledError:
            if sub.closed:
                return "closed"
            raise
        finally:
            sub.waiting.pop(request.id, None)
        return _STATUS_NAMES.get(status, "unknown")

    async def _call_app(self, sub: _Subscriber, request: appcallback_v1.TopicEventRequest) -> str:
        """daprd's gRPC postman: UNIMPLEMENTED drops, any other error retries."""
        try:
            response = await sub.app.OnTopicEvent(request, timeout=self.response_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return "unimplemented"
            return "timeout" if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED else "error"
        return _STATUS_NAMES.get(response.status, "unknown")

    async def _give_up(self, sub: _Subscriber, queued: _Queued, reason: str) -> None:
        """Retries are spent: dead-letter topic if set, else back to the component."""
        if sub.dead_letter_topic:
            self._dead_letter(sub, queued.message)
        elif queued.component_deliveries <= self.redeliveries:
            sub.queue.put_nowait(queued)
        else:
            self.undeliverable.append((queued.message, reason))

    def _dead_letter(self, sub: _Subscriber, message: BrokerMessage) -> None:
        """daprd's ``sendToDeadLetter``: the broker bytes, unchanged, to the dead-letter topic."""
        self._to_broker(BrokerMessage(sub.pubsub, sub.dead_letter_topic, message.data, {}))

    # ------------------------------------------------------------ state API

    def _store(self, name: str) -> _Store:
        if not self.stores:
            raise _DaprError(grpc.StatusCode.FAILED_PRECONDITION, "state store is not configured")
        store = self.stores.get(name)
        if store is None:
            raise _DaprError(grpc.StatusCode.INVALID_ARGUMENT, f"state store {name} is not found")
        return store

    async def GetState(
        self, request: api_v1.GetStateRequest, context: grpc.aio.ServicerContext
    ) -> api_v1.GetStateResponse:
        self.state_calls.append("GetState")
        try:
            store = self._store(request.store_name)
            _check_key(request.key)
        except _DaprError as exc:
            await context.abort(exc.code, exc.details)
        found = store.items.get(request.key)
        if found is None:
            return api_v1.GetStateResponse()
        return api_v1.GetStateResponse(data=found[0], etag=found[1])

    async def GetBulkState(
        self, request: api_v1.GetBulkStateRequest, context: grpc.aio.ServicerContext
    ) -> api_v1.GetBulkStateResponse:
        self.state_calls.append("GetBulkState")
        try:
            store = self._store(request.store_name)
            for key in request.keys:
                _check_key(key)
        except _DaprError as exc:
            await context.abort(exc.code, exc.details)
        items = []
        for key in request.keys:
            found = store.items.get(key)
            if found is None:
                items.append(api_v1.BulkStateItem(key=key))
            else:
                items.append(api_v1.BulkStateItem(key=key, data=found[0], etag=found[1]))
        return api_v1.GetBulkStateResponse(items=items)

    async def SaveState(
        self, request: api_v1.SaveStateRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        self.state_calls.append("SaveState")
        try:
            store = self._store(request.store_name)
            for item in request.states:
                _check_key(item.key)
                if item.HasField("etag") and not item.etag.value:
                    raise _DaprError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"failed saving state in state store {request.store_name}: "
                        "invalid etag value: empty",
                    )
                store.set(item)
        except _DaprError as exc:
            await context.abort(exc.code, exc.details)
        except _EtagMismatch as exc:
            await context.abort(
                grpc.StatusCode.ABORTED,
                f"failed saving state in state store {request.store_name}: "
                f"possible etag mismatch. error from state store: {exc}",
            )
        return empty_pb2.Empty()

    async def DeleteState(
        self, request: api_v1.DeleteStateRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        self.state_calls.append("DeleteState")
        try:
            store = self._store(request.store_name)
            _check_key(request.key)
            store.delete(request.key, request.etag if request.HasField("etag") else None)
        except _DaprError as exc:
            await context.abort(exc.code, exc.details)
        except _EtagMismatch as exc:
            await context.abort(
                grpc.StatusCode.ABORTED,
                f"failed deleting state with key {request.key}: "
                f"possible etag mismatch. error from state store: {exc}",
            )
        return empty_pb2.Empty()

    async def DeleteBulkState(
        self, request: api_v1.DeleteBulkStateRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        self.state_calls.append("DeleteBulkState")
        try:
            store = self._store(request.store_name)
            for item in request.states:
                _check_key(item.key)
                store.delete(item.key, item.etag if item.HasField("etag") else None)
        except _DaprError as exc:
            await context.abort(exc.code, exc.details)
        except _EtagMismatch as exc:
            await context.abort(
                grpc.StatusCode.ABORTED,
                f"failed deleting state: possible etag mismatch. error from state store: {exc}",
            )
        return empty_pb2.Empty()

    async def ExecuteStateTransaction(
        self, request: api_v1.ExecuteStateTransactionRequest, context: grpc.aio.ServicerContext
    ) -> empty_pb2.Empty:
        self.state_calls.append("ExecuteStateTransaction")
        try:
            store = self._store(request.storeName)
            scratch = _Store(dict(store.items), store.versions)
            for op in request.operations:
                _check_key(op.request.key)
                if op.operationType == "upsert":
                    scratch.set(op.request)
                elif op.operationType == "delete":
                    etag = op.request.etag if op.request.HasField("etag") else None
                    scratch.delete(op.request.key, etag)
                else:
                    raise _DaprError(
                        grpc.StatusCode.UNIMPLEMENTED,
                        f"operation type {op.operationType} not supported",
                    )
        except _DaprError as exc:
            await context.abort(exc.code, exc.details)
        except _EtagMismatch as exc:
            await context.abort(
                grpc.StatusCode.INTERNAL,
                "error while executing state transaction: "
                f"possible etag mismatch. error from state store: {exc}",
            )
        store.items = scratch.items
        return empty_pb2.Empty()
