"""The ``virtufin.Pubsub`` service: publish validated CloudEvents, stream topics, sweep idlers.

``PublishEvent`` checks the topic and the envelope before the bus sees them: a malformed topic,
envelope, or a lane rule broken by the pair (``act`` with a selector, a ``scenarioid`` that
disagrees with the topic, …) is INVALID_ARGUMENT with the rule's reason; a publish the bus
refuses for the scenario's status (unregistered or not active) or the broker's permissions is
PERMISSION_DENIED. The request's ``traceparent`` is stamped on an event that has none.

``Subscribe`` streams one topic pattern (fan-out, or competing within ``group``); a stream
that delivered nothing for `idle_seconds` (Virtufin: 5 minutes) is swept: it ends with OK and
the client subscribes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Final

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from services.bootstrap.errors import RpcError
from services.bootstrap.tracing import traceparent
from services.gateway.events import envelope_from_proto, envelope_to_proto
from services.gateway.hub import READY_HEADER, EventFilter, EventHub, Listener
from virtufin.bus.port import EventBus
from virtufin.bus.validation import LaneValidator
from virtufin.errors import PublishRejectedError
from virtufin.lanes import parse, validate_pattern
from virtufin.proto import ensure_built

ensure_built()
from virtufin.proto.gen import gateway_pb2, gateway_pb2_grpc  # noqa: E402

__all__ = ["DEFAULT_IDLE_SECONDS", "PubsubServicer"]

log = logging.getLogger(__name__)
DEFAULT_IDLE_SECONDS: Final = 300.0


class PubsubServicer(gateway_pb2_grpc.PubsubServicer):  # type: ignore[misc]
    """Implements ``virtufin.Pubsub``.

    Args:
        bus: where events are published (its validator checks scenario status).
        hub: stream fan-out.
        stopping: set at shutdown; streams end.
        idle_seconds: sweep streams idle this long.
    """

    def __init__(
        self,
        *,
        bus: EventBus,
        hub: EventHub,
        stopping: asyncio.Event,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
    ) -> None:
        self._bus = bus
        self._hub = hub
        self._stopping = stopping
        self._idle = idle_seconds
        self._static = LaneValidator()
        self._streams: dict[str, Listener] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.swept = 0

    def start(self) -> None:
        """Start the idle sweep."""
        self._sweeper = asyncio.create_task(self._sweep(), name="pubsub:sweep")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for listener in list(self._streams.values()):
            listener.close()

    async def _sweep(self) -> None:
        period = max(0.05, min(30.0, self._idle / 4))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for sid, listener in list(self._streams.items()):
                if now - listener.last_activity >= self._idle:
                    log.info("sweeping idle subscription %s (%s)", sid, listener.filter.topics)
                    self.swept += 1
                    listener.close()

    async def PublishEvent(
        self, request: gateway_pb2.PublishEventRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.PublishEventResponse:
        topic = request.topic.strip()
        if not topic:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, "topic is required")
        parse(topic)  # TopicError → INVALID_ARGUMENT with the rule's reason
        if not request.HasField("cloudevent"):
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, "cloudevent is required")
        envelope = envelope_from_proto(request.cloudevent)
        if envelope.traceparent is None and traceparent() is not None:
            envelope = envelope.with_changes(traceparent=traceparent())
        try:
            await self._static.check(topic, envelope)
        except PublishRejectedError as exc:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, exc.reason) from None
        await self._bus.publish(topic, envelope)  # scenario status → PERMISSION_DENIED
        return gateway_pb2.PublishEventResponse(message_id=envelope.id)

    async def Subscribe(
        self, request: gateway_pb2.PubsubSubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.PubsubSubscribeResponse]:
        pattern = request.topic.strip()
        if not pattern:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, "topic is required")
        validate_pattern(pattern)
        listener = await self._hub.listen(
            EventFilter.of(topics=[pattern]), group=request.group.strip() or None
        )
        self._streams[listener.id] = listener
        stop_watch = asyncio.ensure_future(self._stopping.wait())
        stop_watch.add_done_callback(lambda _: listener.close())
        try:
            await context.send_initial_metadata(((READY_HEADER, listener.id),))
            while True:
                item = await listener.next()
                if item is None:
                    return
                topic, envelope = item
                stamp = Timestamp()
                stamp.GetCurrentTime()
                yield gateway_pb2.PubsubSubscribeResponse(
                    subscription_id=listener.id,
                    topic=topic,
                    cloudevent=envelope_to_proto(envelope),
                    message_id=envelope.id,
                    timestamp=stamp,
                )
        finally:
            stop_watch.cancel()
            self._streams.pop(listener.id, None)
            await self._hub.release(listener)

    async def Unsubscribe(
        self, request: gateway_pb2.UnsubscribeRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.UnsubscribeResponse:
        listener = self._streams.get(request.subscription_id)
        if listener is None:
            return gateway_pb2.UnsubscribeResponse(found=False)
        listener.close()
        return gateway_pb2.UnsubscribeResponse(found=True)
