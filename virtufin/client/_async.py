"""`AsyncClient`: the Python client of Virtufin's gateway on grpc.aio."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

import grpc
from google.protobuf.message import Message

from virtufin.client._errors import ClientError
from virtufin.client._streams import Event, EventStream
from virtufin.client.convert import (
    envelope_from_proto,
    envelope_from_topic_event,
    envelope_to_proto,
)
from virtufin.config import ServiceConfig
from virtufin.envelope import Envelope
from virtufin.errors import ConcurrencyError
from virtufin.proto import ensure_built
from virtufin.state.port import StateItem

ensure_built()
from virtufin.proto.gen import gateway_pb2, gateway_pb2_grpc, workmanager_pb2  # noqa: E402

__all__ = [
    "DEFAULT_RESULT_TIMEOUT_SECONDS",
    "AsyncClient",
    "ConfigApi",
    "GatewayApi",
    "PubsubApi",
    "ServiceProxy",
    "StateApi",
    "WorkManagerApi",
    "default_target",
]

DEFAULT_RESULT_TIMEOUT_SECONDS: Final = 30.0
_M = TypeVar("_M", bound=Message)
_T = TypeVar("_T")


def default_target() -> str:
    """``$VIRTUFIN_API_HOST:$VIRTUFIN_API_GRPC_PORT`` (default ``localhost:5002``)."""
    host = os.environ.get("VIRTUFIN_API_HOST") or "localhost"
    port = os.environ.get("VIRTUFIN_API_GRPC_PORT") or "5002"
    return port if ":" in port else f"{host}:{port}"


class _Transport:
    """The channel, the call metadata and the error translation shared by the APIs."""

    def __init__(self, channel: grpc.aio.Channel, api_key: str | None, timeout: float) -> None:
        self.channel = channel
        self.metadata: tuple[tuple[str, str], ...] = (("x-api-key", api_key),) if api_key else ()
        self.timeout = timeout

    async def unary(self, name: str, method: Callable[..., Awaitable[_T]], request: Any) -> _T:
        try:
            return await method(request, metadata=self.metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise ClientError(exc.code(), exc.details() or "", call=name) from exc


class ServiceProxy:
    """``client.gateway.<service>.<Method>(dict)``: unary calls through ``InvokeJson``.

    Example:
        >>> await client.gateway.workmanager.ListWorkers({})           # doctest: +SKIP
        {'workers': [...]}
    """

    def __init__(self, gateway: GatewayApi, service: str) -> None:
        self._gateway = gateway
        self._service = service

    def __getattr__(self, method: str) -> Callable[..., Awaitable[dict[str, Any]]]:
        if method.startswith("_"):
            raise AttributeError(method)
        return self[method]

    def __getitem__(self, method: str) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def call(
            request: Mapping[str, Any] | None = None, /, **fields: Any
        ) -> dict[str, Any]:
            return await self._gateway.invoke_json(
                self._service, method, {**(request or {}), **fields}
            )

        call.__name__ = method
        return call


class GatewayApi:
    """``virtufin.Gateway``: typed calls plus dynamic dispatch by attribute.

    ``client.gateway.workmanager.CreateWorker({...})`` calls the backend ``workmanager``'s
    ``CreateWorker`` with a dict (``client.gateway["some-service"]`` for names with ``-``).
    """

    def __init__(self, transport: _Transport) -> None:
        self._t = transport
        self._stub = gateway_pb2_grpc.GatewayStub(transport.channel)

    def __getattr__(self, service: str) -> ServiceProxy:
        if service.startswith("_"):
            raise AttributeError(service)
        return ServiceProxy(self, service)

    def __getitem__(self, service: str) -> ServiceProxy:
        return ServiceProxy(self, service)

    async def invoke_json(
        self, service: str, method: str, request: Mapping[str, Any] | str | None = None
    ) -> dict[str, Any]:
        """Call a unary backend method with JSON; return its JSON answer as a dict.

        Raises:
            ClientError: the gateway refused (`backend` False) or the backend failed
                (`backend` True, `code` the backend's status).
        """
        text = request if isinstance(request, str) else json.dumps(dict(request or {}))
        reply = await self._t.unary(
            "Gateway.InvokeJson",
            self._stub.InvokeJson,
            gateway_pb2.InvokeJsonRequest(service=service, method=method, request_data=text),
        )
        if not reply.success:
            raise ClientError(
                _status_code(reply.status),
                reply.message,
                call=f"{service}.{method}",
                backend=True,
            )
        data: dict[str, Any] = json.loads(reply.response_data) if reply.response_data else {}
        return data

    async def invoke(
        self, service: str, method: str, request: Message, response_type: type[_M]
    ) -> _M:
        """Call a unary backend method with protobuf messages (typed stubs, no JSON).

        Raises:
            ClientError: as `invoke_json`.
        """
        reply = await self._t.unary(
            "Gateway.Invoke",
            self._stub.Invoke,
            gateway_pb2.InvokeRequest(
                service=service, method=method, request_data=request.SerializeToString()
            ),
        )
        if not reply.success:
            raise ClientError(
                _status_code(reply.status),
                reply.message,
                call=f"{service}.{method}",
                backend=True,
            )
        return response_type.FromString(reply.response_data)

    async def list_services(self) -> list[gateway_pb2.ServiceInfo]:
        reply = await self._t.unary(
            "Gateway.ListServices", self._stub.ListServices, gateway_pb2.ListServicesRequest()
        )
        return list(reply.services)

    async def list_methods(self, service: str) -> list[gateway_pb2.MethodInfo]:
        reply = await self._t.unary(
            "Gateway.ListMethods",
            self._stub.ListMethods,
            gateway_pb2.ListMethodsRequest(service=service),
        )
        return list(reply.methods)

    async def get_method_schema(self, service: str, method: str) -> dict[str, Any]:
        """``{"method": {...}, "input": <JSON Schema>, "output": <JSON Schema>}``."""
        reply = await self._t.unary(
            "Gateway.GetMethodSchema",
            self._stub.GetMethodSchema,
            gateway_pb2.GetMethodSchemaRequest(service=service, method=method),
        )
        return {
            "method": {
                "name": reply.method.name,
                "full_name": reply.method.full_name,
                "input_type": reply.method.input_type,
                "output_type": reply.method.output_type,
            },
            "input": json.loads(reply.input_schema_json),
            "output": json.loads(reply.output_schema_json),
        }

    async def subscribe(
        self,
        *,
        services: Iterable[str] = (),
        topics: Iterable[str] = (),
        event_types: Iterable[str] = (),
    ) -> EventStream[gateway_pb2.TopicEventRequest]:
        """A live event stream (returns once the gateway subscribed).

        Example:
            >>> async with await client.gateway.subscribe(topics=["workmanager.lifecycle"]) as s:
            ...     async for event in s: ...                              # doctest: +SKIP
        """
        call = self._stub.Subscribe(
            gateway_pb2.SubscribeRequest(
                services=list(services), topics=list(topics), event_types=list(event_types)
            ),
            metadata=self._t.metadata,
        )
        stream: EventStream[gateway_pb2.TopicEventRequest] = EventStream(
            call,
            lambda m: Event(m.topic, envelope_from_topic_event(m)),
            name="Gateway.Subscribe",
        )
        return await stream.ready()


def _status_code(code: int) -> grpc.StatusCode:
    """The `grpc.StatusCode` of a numeric code (UNKNOWN if unheard of)."""
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN


class StateApi:
    """``virtufin.State``: JSON values with etags; a stale etag raises `ConcurrencyError`."""

    def __init__(self, transport: _Transport) -> None:
        self._t = transport
        self._stub = gateway_pb2_grpc.StateStub(transport.channel)

    async def save(
        self,
        service: str,
        key: str,
        value: Any,
        *,
        etag: str | None = None,
        include_value: bool = False,
    ) -> str:
        """Store a JSON value; return the new etag.

        Raises:
            ConcurrencyError: `etag` is stale (someone else wrote first).
        """
        request = gateway_pb2.SaveStateRequest(
            service=service,
            key=key,
            value=json.dumps(value).encode(),
            etag=etag or "",
            include_value=include_value,
        )
        try:
            reply = await self._t.unary("State.SaveState", self._stub.SaveState, request)
        except ClientError as exc:
            if exc.code is grpc.StatusCode.ABORTED:
                raise ConcurrencyError(key, etag) from exc
            raise
        return str(reply.etag)

    async def get(self, service: str, key: str) -> StateItem | None:
        reply = await self._t.unary(
            "State.GetState",
            self._stub.GetState,
            gateway_pb2.GetStateRequest(service=service, key=key),
        )
        if not reply.found:
            return None
        return StateItem(key, json.loads(reply.value), reply.etag)

    async def get_all(self, service: str, *, prefix: str = "") -> list[StateItem]:
        reply = await self._t.unary(
            "State.GetAllState",
            self._stub.GetAllState,
            gateway_pb2.GetAllStateRequest(service=service, prefix=prefix),
        )
        return [StateItem(i.key, json.loads(i.value), i.etag) for i in reply.items]

    async def register_keys(self, service: str, keys: Iterable[str]) -> int:
        reply = await self._t.unary(
            "State.RegisterKeys",
            self._stub.RegisterKeys,
            gateway_pb2.RegisterKeysRequest(service=service, keys=list(keys)),
        )
        return int(reply.registered)

    async def delete(self, service: str, key: str, *, etag: str | None = None) -> bool:
        """Delete a key; False when it did not exist.

        Raises:
            ConcurrencyError: `etag` is stale.
        """
        request = gateway_pb2.DeleteStateRequest(service=service, key=key, etag=etag or "")
        try:
            reply = await self._t.unary("State.DeleteState", self._stub.DeleteState, request)
        except ClientError as exc:
            if exc.code is grpc.StatusCode.ABORTED:
                raise ConcurrencyError(key, etag) from exc
            raise
        return bool(reply.deleted)


class PubsubApi:
    """``virtufin.Pubsub``: publish, subscribe, request/reply by correlation id."""

    def __init__(self, transport: _Transport, gateway: GatewayApi) -> None:
        self._t = transport
        self._gateway = gateway
        self._stub = gateway_pb2_grpc.PubsubStub(transport.channel)

    async def publish(self, topic: str, envelope: Envelope) -> str:
        """Publish one event; return its message id.

        Raises:
            ClientError: INVALID_ARGUMENT (bad topic or envelope, a lane rule with its
                reason) or PERMISSION_DENIED (the scenario is not active, broker refusal).
        """
        reply = await self._t.unary(
            "Pubsub.PublishEvent",
            self._stub.PublishEvent,
            gateway_pb2.PublishEventRequest(topic=topic, cloudevent=envelope_to_proto(envelope)),
        )
        return str(reply.message_id)

    async def subscribe(
        self, topic: str, *, group: str | None = None
    ) -> EventStream[gateway_pb2.PubsubSubscribeResponse]:
        """A live stream of one topic pattern; `group` makes members compete for events."""
        call = self._stub.Subscribe(
            gateway_pb2.PubsubSubscribeRequest(topic=topic, group=group or ""),
            metadata=self._t.metadata,
        )
        stream: EventStream[gateway_pb2.PubsubSubscribeResponse] = EventStream(
            call,
            lambda m: Event(m.topic, envelope_from_proto(m.cloudevent)),
            name="Pubsub.Subscribe",
        )
        return await stream.ready()

    async def unsubscribe(self, subscription_id: str) -> bool:
        reply = await self._t.unary(
            "Pubsub.Unsubscribe",
            self._stub.Unsubscribe,
            gateway_pb2.UnsubscribeRequest(subscription_id=subscription_id),
        )
        return bool(reply.found)

    async def publish_with_result(
        self,
        topic: str,
        envelope: Envelope,
        *,
        reply_topic: str,
        timeout: float = DEFAULT_RESULT_TIMEOUT_SECONDS,  # noqa: ASYNC109 - Virtufin's SDK signature
    ) -> Envelope:
        """Publish and wait for the first event on `reply_topic` with the same correlation id.

        The event is sent with a ``correlationid`` (its own, or a new UUID) and a
        ``replytopic`` extension naming `reply_topic`, which workers answer to.

        Raises:
            TimeoutError: no reply within `timeout` seconds (default 30).
        """
        correlation = envelope.correlationid or uuid.uuid4().hex
        extensions = {**envelope.extensions, "replytopic": reply_topic}
        request = envelope.with_changes(correlationid=correlation, extensions=extensions)
        stream = await self._gateway.subscribe(topics=[reply_topic])
        try:
            await self.publish(topic, request)
            async with asyncio.timeout(timeout):
                async for event in stream:
                    if event.envelope.correlationid == correlation:
                        return event.envelope
        except TimeoutError:
            raise TimeoutError(
                f"no reply on {reply_topic!r} with correlationid {correlation} in {timeout:g} s"
            ) from None
        finally:
            await stream.aclose()
        raise ClientError(
            grpc.StatusCode.UNAVAILABLE, "reply stream ended", call="publish_with_result"
        )


class ConfigApi:
    """``virtufin.Config``: the gateway's ``services.json``."""

    def __init__(self, transport: _Transport) -> None:
        self._t = transport
        self._stub = gateway_pb2_grpc.ConfigStub(transport.channel)

    async def list_services(self) -> list[ServiceConfig]:
        reply = await self._t.unary(
            "Config.ListServices", self._stub.ListServices, gateway_pb2.ConfigListServicesRequest()
        )
        return [ServiceConfig.model_validate(json.loads(s.json)) for s in reply.services]

    async def get_service(self, name: str) -> ServiceConfig:
        reply = await self._t.unary(
            "Config.GetService", self._stub.GetService, gateway_pb2.GetServiceRequest(name=name)
        )
        return ServiceConfig.model_validate(json.loads(reply.service.json))


class WorkManagerApi:
    """The WorkManager's RPCs with typed messages, through ``Gateway.Invoke``.

    Example:
        >>> info = await client.workmanager.create_worker(
        ...     workmanager_pb2.CreateWorkerRequest(id="echo-1", ...))      # doctest: +SKIP
    """

    def __init__(self, gateway: GatewayApi, *, service: str = "workmanager") -> None:
        self._gateway = gateway
        self._service = service

    async def _call(self, method: str, request: Message, response_type: type[_M]) -> _M:
        return await self._gateway.invoke(self._service, method, request, response_type)

    async def create_worker(
        self, request: workmanager_pb2.CreateWorkerRequest
    ) -> workmanager_pb2.WorkerInfo:
        reply = await self._call("CreateWorker", request, workmanager_pb2.CreateWorkerResponse)
        return reply.worker

    async def list_workers(
        self, request: workmanager_pb2.ListWorkersRequest | None = None
    ) -> list[workmanager_pb2.WorkerInfo]:
        reply = await self._call(
            "ListWorkers",
            request or workmanager_pb2.ListWorkersRequest(),
            workmanager_pb2.ListWorkersResponse,
        )
        return list(reply.workers)

    async def start_worker(self, worker_id: str) -> workmanager_pb2.WorkerInfo:
        reply = await self._call(
            "StartWorker",
            workmanager_pb2.StartWorkerRequest(id=worker_id),
            workmanager_pb2.StartWorkerResponse,
        )
        return reply.worker

    async def stop_worker(self, worker_id: str) -> workmanager_pb2.WorkerInfo:
        reply = await self._call(
            "StopWorker",
            workmanager_pb2.StopWorkerRequest(id=worker_id),
            workmanager_pb2.StopWorkerResponse,
        )
        return reply.worker

    async def delete_worker(self, worker_id: str) -> bool:
        reply = await self._call(
            "DeleteWorker",
            workmanager_pb2.DeleteWorkerRequest(id=worker_id),
            workmanager_pb2.DeleteWorkerResponse,
        )
        return bool(reply.deleted)

    async def load_code(
        self, request: workmanager_pb2.LoadCodeRequest
    ) -> workmanager_pb2.LoadCodeResponse:
        return await self._call("LoadCode", request, workmanager_pb2.LoadCodeResponse)

    async def recover_workers(
        self, *, force: bool = False
    ) -> workmanager_pb2.RecoverWorkersResponse:
        return await self._call(
            "RecoverWorkers",
            workmanager_pb2.RecoverWorkersRequest(force=force),
            workmanager_pb2.RecoverWorkersResponse,
        )

    async def history(self, worker_id: str) -> Sequence[workmanager_pb2.WorkerHistoryEntry]:
        reply = await self._call(
            "GetWorkerHistory",
            workmanager_pb2.GetWorkerHistoryRequest(id=worker_id),
            workmanager_pb2.GetWorkerHistoryResponse,
        )
        return list(reply.entries)


class AsyncClient:
    """The gateway client on grpc.aio.

    Args:
        target: ``host:port`` of the gateway (default `default_target`).
        api_key: sent as ``x-api-key`` (default ``$VIRTUFIN_API_KEY``).
        timeout: per-call deadline in seconds (streams have none).
        options: extra channel arguments.

    Example:
        >>> async with AsyncClient("localhost:5002", api_key="k") as client:  # doctest: +SKIP
        ...     etag = await client.state.save("demo", "greeting", {"text": "hi"})
        ...     workers = await client.gateway.workmanager.ListWorkers()
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target or default_target()
        key = api_key if api_key is not None else os.environ.get("VIRTUFIN_API_KEY")
        self._channel = grpc.aio.insecure_channel(
            self.target,
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                *options,
            ],
        )
        transport = _Transport(self._channel, key or None, timeout)
        self.gateway = GatewayApi(transport)
        self.state = StateApi(transport)
        self.pubsub = PubsubApi(transport, self.gateway)
        self.config = ConfigApi(transport)
        self.workmanager = WorkManagerApi(self.gateway)

    async def publish_with_result(
        self,
        topic: str,
        envelope: Envelope,
        *,
        reply_topic: str,
        timeout: float = DEFAULT_RESULT_TIMEOUT_SECONDS,  # noqa: ASYNC109 - Virtufin's SDK signature
    ) -> Envelope:
        """Shortcut of `PubsubApi.publish_with_result`."""
        return await self.pubsub.publish_with_result(
            topic, envelope, reply_topic=reply_topic, timeout=timeout
        )

    async def wait_ready(self, *, within_s: float = 10.0) -> None:
        """Wait until the channel is connected.

        Raises:
            TimeoutError: not connected within `within_s` seconds.
        """
        await asyncio.wait_for(self._channel.channel_ready(), within_s)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
