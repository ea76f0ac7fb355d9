"""`Client`: the blocking twin of `AsyncClient`, for scripts and notebooks.

It runs an `AsyncClient` on a private event loop in a daemon thread and waits for each call,
so both clients behave identically; streams become plain iterators.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Final, TypeVar

from google.protobuf.message import Message

from virtufin.client._async import DEFAULT_RESULT_TIMEOUT_SECONDS, AsyncClient
from virtufin.client._streams import Event, EventStream
from virtufin.config import ServiceConfig
from virtufin.envelope import Envelope
from virtufin.proto import ensure_built
from virtufin.state.port import StateItem

ensure_built()
from virtufin.proto.gen import gateway_pb2, workmanager_pb2  # noqa: E402

__all__ = ["Client", "SyncEventStream"]

_T = TypeVar("_T")
_M = TypeVar("_M", bound=Message)


class _Loop:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="virtufin-client", daemon=True
        )
        self._thread.start()

    def run(self, coro: Awaitable[_T], timeout: float | None = None) -> _T:
        future: Future[_T] = asyncio.run_coroutine_threadsafe(_as_coro(coro), self.loop)
        return future.result(timeout)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5.0)
        if not self.loop.is_running():
            self.loop.close()


async def _as_coro(awaitable: Awaitable[_T]) -> _T:
    return await awaitable


class SyncEventStream:
    """``for event in stream`` over a gateway stream; `close` ends it.

    A task on the client's loop reads the stream into a queue, so `next` can wait with a
    timeout without disturbing the stream.
    """

    _END: Final = object()

    def __init__(self, stream: EventStream[Any], loop: _Loop) -> None:
        self._stream = stream
        self._loop = loop
        self._queue: queue.Queue[Any] = queue.Queue()
        self._finished = False
        asyncio.run_coroutine_threadsafe(self._pump(), loop.loop)

    async def _pump(self) -> None:
        try:
            async for event in self._stream:
                self._queue.put(event)
        except Exception as exc:
            self._queue.put(exc)
        self._queue.put(self._END)

    @property
    def subscription_id(self) -> str:
        return self._stream.subscription_id

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        return self.next()

    def next(self, timeout: float | None = None) -> Event:
        """The next event, waiting at most `timeout` seconds (None: as long as it takes).

        Raises:
            TimeoutError: nothing arrived in time (the stream stays open).
            StopIteration: the stream ended.
            ClientError: the stream failed.
        """
        if self._finished:
            raise StopIteration
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no event within {timeout} s") from None
        if item is self._END:
            self._finished = True
            raise StopIteration
        if isinstance(item, Exception):
            self._finished = True
            raise item
        event: Event = item
        return event

    def close(self) -> None:
        self._loop.run(self._stream.aclose())

    def __enter__(self) -> SyncEventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SyncServiceProxy:
    def __init__(self, client: Client, service: str) -> None:
        self._client = client
        self._service = service

    def __getattr__(self, method: str) -> Callable[..., dict[str, Any]]:
        if method.startswith("_"):
            raise AttributeError(method)
        return self[method]

    def __getitem__(self, method: str) -> Callable[..., dict[str, Any]]:
        def call(request: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
            return self._client.gateway.invoke_json(
                self._service, method, {**(request or {}), **fields}
            )

        call.__name__ = method
        return call


class _SyncGateway:
    def __init__(self, client: Client) -> None:
        self._c = client
        self._a = client._async.gateway

    def __getattr__(self, service: str) -> _SyncServiceProxy:
        if service.startswith("_"):
            raise AttributeError(service)
        return _SyncServiceProxy(self._c, service)

    def __getitem__(self, service: str) -> _SyncServiceProxy:
        return _SyncServiceProxy(self._c, service)

    def invoke_json(
        self, service: str, method: str, request: Mapping[str, Any] | str | None = None
    ) -> dict[str, Any]:
        return self._c._run(self._a.invoke_json(service, method, request))

    def invoke(self, service: str, method: str, request: Message, response_type: type[_M]) -> _M:
        return self._c._run(self._a.invoke(service, method, request, response_type))

    def list_services(self) -> list[gateway_pb2.ServiceInfo]:
        return self._c._run(self._a.list_services())

    def list_methods(self, service: str) -> list[gateway_pb2.MethodInfo]:
        return self._c._run(self._a.list_methods(service))

    def get_method_schema(self, service: str, method: str) -> dict[str, Any]:
        return self._c._run(self._a.get_method_schema(service, method))

    def subscribe(
        self,
        *,
        services: Iterable[str] = (),
        topics: Iterable[str] = (),
        event_types: Iterable[str] = (),
    ) -> SyncEventStream:
        stream = self._c._run(
            self._a.subscribe(services=services, topics=topics, event_types=event_types)
        )
        return SyncEventStream(stream, self._c._loop)


class _SyncState:
    def __init__(self, client: Client) -> None:
        self._c = client
        self._a = client._async.state

    def save(
        self,
        service: str,
        key: str,
        value: Any,
        *,
        etag: str | None = None,
        include_value: bool = False,
    ) -> str:
        return self._c._run(
            self._a.save(service, key, value, etag=etag, include_value=include_value)
        )

    def get(self, service: str, key: str) -> StateItem | None:
        return self._c._run(self._a.get(service, key))

    def get_all(self, service: str, *, prefix: str = "") -> list[StateItem]:
        return self._c._run(self._a.get_all(service, prefix=prefix))

    def register_keys(self, service: str, keys: Iterable[str]) -> int:
        return self._c._run(self._a.register_keys(service, list(keys)))

    def delete(self, service: str, key: str, *, etag: str | None = None) -> bool:
        return self._c._run(self._a.delete(service, key, etag=etag))


class _SyncPubsub:
    def __init__(self, client: Client) -> None:
        self._c = client
        self._a = client._async.pubsub

    def publish(self, topic: str, envelope: Envelope) -> str:
        return self._c._run(self._a.publish(topic, envelope))

    def subscribe(self, topic: str, *, group: str | None = None) -> SyncEventStream:
        return SyncEventStream(self._c._run(self._a.subscribe(topic, group=group)), self._c._loop)

    def unsubscribe(self, subscription_id: str) -> bool:
        return self._c._run(self._a.unsubscribe(subscription_id))

    def publish_with_result(
        self,
        topic: str,
        envelope: Envelope,
        *,
        reply_topic: str,
        timeout: float = DEFAULT_RESULT_TIMEOUT_SECONDS,
    ) -> Envelope:
        return self._c._run(
            self._a.publish_with_result(topic, envelope, reply_topic=reply_topic, timeout=timeout)
        )


class _SyncConfig:
    def __init__(self, client: Client) -> None:
        self._c = client
        self._a = client._async.config

    def list_services(self) -> list[ServiceConfig]:
        return self._c._run(self._a.list_services())

    def get_service(self, name: str) -> ServiceConfig:
        return self._c._run(self._a.get_service(name))


class _SyncWorkManager:
    def __init__(self, client: Client) -> None:
        self._c = client
        self._a = client._async.workmanager

    def create_worker(
        self, request: workmanager_pb2.CreateWorkerRequest
    ) -> workmanager_pb2.WorkerInfo:
        return self._c._run(self._a.create_worker(request))

    def list_workers(
        self, request: workmanager_pb2.ListWorkersRequest | None = None
    ) -> list[workmanager_pb2.WorkerInfo]:
        return self._c._run(self._a.list_workers(request))

    def start_worker(self, worker_id: str) -> workmanager_pb2.WorkerInfo:
        return self._c._run(self._a.start_worker(worker_id))

    def stop_worker(self, worker_id: str) -> workmanager_pb2.WorkerInfo:
        return self._c._run(self._a.stop_worker(worker_id))

    def delete_worker(self, worker_id: str) -> bool:
        return self._c._run(self._a.delete_worker(worker_id))

    def load_code(
        self, request: workmanager_pb2.LoadCodeRequest
    ) -> workmanager_pb2.LoadCodeResponse:
        return self._c._run(self._a.load_code(request))

    def recover_workers(self, *, force: bool = False) -> workmanager_pb2.RecoverWorkersResponse:
        return self._c._run(self._a.recover_workers(force=force))

    def history(self, worker_id: str) -> Sequence[workmanager_pb2.WorkerHistoryEntry]:
        return self._c._run(self._a.history(worker_id))


class Client:
    """Blocking client of the gateway; same arguments and API as `AsyncClient`.

    Example:
        >>> with Client("localhost:5002", api_key="k") as client:        # doctest: +SKIP
        ...     client.state.save("demo", "greeting", {"text": "hi"})
        ...     client.gateway.workmanager.ListWorkers()
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._loop = _Loop()

        async def make() -> AsyncClient:
            return AsyncClient(target, api_key=api_key, timeout=timeout, options=options)

        self._async = self._loop.run(make())
        self.target = self._async.target
        self.gateway = _SyncGateway(self)
        self.state = _SyncState(self)
        self.pubsub = _SyncPubsub(self)
        self.config = _SyncConfig(self)
        self.workmanager = _SyncWorkManager(self)

    def _run(self, coro: Awaitable[_T]) -> _T:
        return self._loop.run(coro)

    def publish_with_result(
        self,
        topic: str,
        envelope: Envelope,
        *,
        reply_topic: str,
        timeout: float = DEFAULT_RESULT_TIMEOUT_SECONDS,
    ) -> Envelope:
        """Shortcut of the pubsub API's `publish_with_result`."""
        return self.pubsub.publish_with_result(
            topic, envelope, reply_topic=reply_topic, timeout=timeout
        )

    def wait_ready(self, *, within_s: float = 10.0) -> None:
        """Wait until the channel is connected (TimeoutError otherwise)."""
        self._run(self._async.wait_ready(within_s=within_s))

    def close(self) -> None:
        """Close the channel and stop the loop thread (idempotent)."""
        if self._loop.loop.is_closed():
            return
        self._run(self._async.close())
        self._loop.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
