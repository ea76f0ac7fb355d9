"""The ``virtufin.Gateway`` service: dynamic calls to backends and one filtered event stream.

``Invoke``/``InvokeJson`` route to the backend named in ``services.json`` (round-robin over
``grpc.hosts``, retries and circuit breakers in `BackendPool`), with method and message types
learned through the backend's reflection (`SchemaCache`; each method is resolved once per
spelling, and JSON goes through the schema's planned `JsonCodec`). A bad request to the gateway
(unknown service or method, JSON that does not fit the request type) fails the call itself
(NOT_FOUND / INVALID_ARGUMENT); whatever the backend answers is reported in-band
(``success``, ``status``, ``message``), as Virtufin's API does. An UNIMPLEMENTED answer means
the cached schema may be stale: the cache is dropped and the call tried once more.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import MethodDescriptor

from services.bootstrap.errors import RpcError
from services.gateway.backends import Backend, BackendPool
from services.gateway.descriptors import (
    INFRA_SERVICES,
    BackendSchema,
    Route,
    SchemaCache,
    path_of,
)
from services.gateway.events import topic_event
from services.gateway.hub import READY_HEADER, EventFilter, EventHub
from services.gateway.schema import message_schema
from virtufin.proto import ensure_built

ensure_built()
from virtufin.proto.gen import gateway_pb2, gateway_pb2_grpc  # noqa: E402

__all__ = ["GatewayServicer"]

log = logging.getLogger(__name__)


def _method_info(method: MethodDescriptor) -> gateway_pb2.MethodInfo:
    return gateway_pb2.MethodInfo(
        name=method.name,
        full_name=path_of(method),
        input_type=method.input_type.full_name,
        output_type=method.output_type.full_name,
        client_streaming=method.client_streaming,
        server_streaming=method.server_streaming,
    )


def _unary(method: MethodDescriptor) -> None:
    if method.client_streaming or method.server_streaming:
        raise RpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{path_of(method)} is a streaming method; Invoke calls unary methods only",
        )


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):  # type: ignore[misc]
    """Implements ``virtufin.Gateway``.

    Args:
        backends: the routable backends.
        schemas: their reflection cache.
        hub: bus fan-out for ``Subscribe``.
        stopping: set at shutdown; open streams end.
        pubsub_name: reported in ``TopicEventRequest.pubsub_name``.
    """

    def __init__(
        self,
        *,
        backends: BackendPool,
        schemas: SchemaCache,
        hub: EventHub,
        stopping: asyncio.Event,
        pubsub_name: str = "pubsub",
    ) -> None:
        self._backends = backends
        self._schemas = schemas
        self._hub = hub
        self._stopping = stopping
        self._pubsub_name = pubsub_name

    # ------------------------------------------------------------------ invoke

    @staticmethod
    def _timeout(context: grpc.aio.ServicerContext) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else max(0.001, remaining - 0.005)

    async def _resolve(self, backend: Backend, method: str) -> tuple[BackendSchema, Route]:
        schema = self._schemas.cached(backend.name) or await self._schemas.get(backend)
        try:
            route = schema.route(method)
        except RpcError as exc:
            if exc.code is not grpc.StatusCode.NOT_FOUND or self._schemas.age(backend.name) < 1.0:
                raise
            # Maybe the backend was redeployed with the method since we cached it (at most
            # one reload a second, so that unknown names cannot keep us reflecting).
            self._schemas.invalidate(backend.name, f"unknown method {method!r}")
            schema = await self._schemas.get(backend)
            route = schema.route(method)
        _unary(route.method)
        return schema, route

    async def _call(
        self,
        backend: Backend,
        method: str,
        encode: Callable[[BackendSchema, Route], bytes],
        context: grpc.aio.ServicerContext,
    ) -> tuple[BackendSchema, Route, bytes | grpc.aio.AioRpcError | RpcError]:
        """Resolve, encode with `encode(schema, route)`, call; retry once on UNIMPLEMENTED."""
        for attempt in (1, 2):
            try:
                schema, route = await self._resolve(backend, method)
            except RpcError as exc:
                if exc.code is grpc.StatusCode.UNAVAILABLE:
                    raise _InBand(exc) from None
                raise
            payload = encode(schema, route)
            try:
                raw = await self._backends.call(
                    backend, route.path, payload, deadline_s=self._timeout(context)
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.UNIMPLEMENTED and attempt == 1:
                    self._schemas.invalidate(backend.name, f"{route.path} is UNIMPLEMENTED")
                    continue
                return schema, route, exc
            except RpcError as exc:  # every circuit open
                return schema, route, exc
            return schema, route, raw
        raise AssertionError("unreachable")  # pragma: no cover

    async def Invoke(
        self, request: gateway_pb2.InvokeRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.InvokeResponse:
        backend = self._backends.get(request.service)
        try:
            _, _, outcome = await self._call(
                backend, request.method, lambda s, r: request.request_data, context
            )
        except _InBand as exc:
            return gateway_pb2.InvokeResponse(
                success=False, status=exc.error.code.value[0], message=exc.error.message
            )
        if isinstance(outcome, bytes):
            return gateway_pb2.InvokeResponse(success=True, status=0, response_data=outcome)
        code, message = _failure(outcome)
        return gateway_pb2.InvokeResponse(success=False, status=code, message=message)

    async def InvokeJson(
        self, request: gateway_pb2.InvokeJsonRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.InvokeJsonResponse:
        backend = self._backends.get(request.service)
        text = request.request_data.strip() or "{}"

        def encode(schema: BackendSchema, route: Route) -> bytes:
            try:
                return schema.codec.parse(text, route.request_class)
            except json_format.ParseError as exc:
                raise RpcError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"request_data does not fit {route.method.input_type.full_name}: {exc}",
                ) from None

        try:
            schema, route, outcome = await self._call(backend, request.method, encode, context)
        except _InBand as exc:
            return gateway_pb2.InvokeJsonResponse(
                success=False, status=exc.error.code.value[0], message=exc.error.message
            )
        if not isinstance(outcome, bytes):
            code, message = _failure(outcome)
            return gateway_pb2.InvokeJsonResponse(success=False, status=code, message=message)
        reply = route.response_class.FromString(outcome)
        return gateway_pb2.InvokeJsonResponse(
            success=True, status=0, response_data=schema.codec.dumps(reply)
        )

    # ------------------------------------------------------------------ discovery

    async def ListServices(
        self, request: gateway_pb2.ListServicesRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListServicesResponse:
        out = []
        for name in self._backends.names:
            backend = self._backends.get(name)
            grpc_services: tuple[str, ...] = ()
            if backend.healthy or self._schemas.cached(name) is not None:
                try:
                    grpc_services = (await self._schemas.get(backend)).services
                except RpcError:
                    grpc_services = ()
            out.append(
                gateway_pb2.ServiceInfo(
                    name=name, grpc_services=grpc_services, healthy=backend.healthy
                )
            )
        return gateway_pb2.ListServicesResponse(services=out)

    async def ListMethods(
        self, request: gateway_pb2.ListMethodsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListMethodsResponse:
        backend = self._backends.get(request.service)
        schema = await self._schemas.get(backend)
        methods = [
            _method_info(m)
            for key, m in sorted(schema.methods.items())
            if m.containing_service.full_name not in INFRA_SERVICES
        ]
        return gateway_pb2.ListMethodsResponse(service=request.service, methods=methods)

    async def GetMethodSchema(
        self, request: gateway_pb2.GetMethodSchemaRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetMethodSchemaResponse:
        backend = self._backends.get(request.service)
        schema = await self._schemas.get(backend)
        method = schema.method(request.method)
        return gateway_pb2.GetMethodSchemaResponse(
            service=request.service,
            method=_method_info(method),
            input_schema_json=json.dumps(message_schema(method.input_type)),
            output_schema_json=json.dumps(message_schema(method.output_type)),
        )

    # ------------------------------------------------------------------ events

    async def Subscribe(
        self, request: gateway_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.TopicEventRequest]:
        event_filter = EventFilter.of(
            services=request.services, topics=request.topics, event_types=request.event_types
        )
        unknown = [s for s in event_filter.services if s not in self._backends.names]
        if unknown:
            log.debug("Subscribe filters on services outside services.json: %s", unknown)
        listener = await self._hub.listen(event_filter)
        try:
            await context.send_initial_metadata(((READY_HEADER, listener.id),))
            stop_watch = asyncio.ensure_future(self._stopping.wait())
            stop_watch.add_done_callback(lambda _: listener.close())
            try:
                while True:
                    item = await listener.next()
                    if item is None:
                        return
                    topic, envelope = item
                    yield topic_event(envelope, topic, pubsub_name=self._pubsub_name)
            finally:
                stop_watch.cancel()
        finally:
            await self._hub.release(listener)


class _InBand(Exception):
    """A backend-side failure to report in the response rather than as the call's status."""

    def __init__(self, error: RpcError) -> None:
        super().__init__(error.message)
        self.error = error


def _failure(outcome: grpc.aio.AioRpcError | RpcError) -> tuple[int, str]:
    if isinstance(outcome, RpcError):
        return outcome.code.value[0], outcome.message
    return outcome.code().value[0], outcome.details() or outcome.code().name
