"""The backends the gateway routes to: channels, round-robin, breakers and health watches.

Every ``services.json`` entry except the gateway itself is a backend; its addresses are
``grpc.hosts`` when given (round-robin across replicas), else ``grpc.host:grpc.port``. Each
address keeps one channel, one `CircuitBreaker` and a ``grpc.health.v1`` Watch stream. When an
address comes (back) to SERVING, e.g. after a restart, its breaker closes and the gateway's
reflection cache of that backend is invalidated through `on_change`. While it is down the
cached schema is kept, so calls fail through retries and the breaker rather than reflection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.bootstrap.errors import RpcError
from services.bootstrap.tracing import outgoing_metadata
from services.gateway.resilience import (
    BREAKER_FAILURES,
    RETRYABLE,
    CircuitBreaker,
    ResilienceConfig,
)
from virtufin.config import ServicesConfig

__all__ = ["Backend", "BackendPool", "Endpoint"]

log = logging.getLogger(__name__)
_WATCH_BACKOFF_S: Final = (0.2, 0.5, 1.0, 2.0)
_SERVING: Final = health_pb2.HealthCheckResponse.SERVING
_CHANNEL_OPTIONS: Final = (
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 0),
    # Reconnect quickly after a backend restart (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


class Endpoint:
    """One address of a backend: its channel, breaker and last known health."""

    def __init__(self, backend: str, address: str, config: ResilienceConfig) -> None:
        self.backend = backend
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=list(_CHANNEL_OPTIONS))
        self.breaker = CircuitBreaker(
            threshold=config.breaker_threshold, open_seconds=config.breaker_open_seconds
        )
        self.healthy = False
        self._calls: dict[str, Any] = {}

    def unary(self, path: str) -> Any:
        """A bytes-in, bytes-out unary callable for method `path` (cached)."""
        call = self._calls.get(path)
        if call is None:
            call = self.channel.unary_unary(path)
            self._calls[path] = call
        return call


class Backend:
    """A named backend and its endpoints, picked round-robin past open circuits."""

    def __init__(self, name: str, endpoints: Sequence[Endpoint]) -> None:
        self.name = name
        self.endpoints = list(endpoints)
        self._cursor = itertools.count()

    @property
    def healthy(self) -> bool:
        return any(ep.healthy for ep in self.endpoints)

    def pick(self) -> Endpoint:
        """The next endpoint whose breaker lets a call through.

        Raises:
            RpcError: UNAVAILABLE when every endpoint's circuit is open.
        """
        start = next(self._cursor)
        n = len(self.endpoints)
        for i in range(n):
            ep = self.endpoints[(start + i) % n]
            if ep.breaker.allow():
                return ep
        raise RpcError(
            grpc.StatusCode.UNAVAILABLE,
            f"circuit open for backend {self.name!r} (every address failed repeatedly)",
        )


class BackendPool:
    """Every backend of ``services.json``, and the resilient way to call them.

    Args:
        services: the catalogue.
        gateway_name: the gateway's own entry, which is not a backend.
        config: retry and breaker settings.
        api_key: sent as ``x-api-key`` to backends (they check keys too).
        on_change: called with a backend's name when an endpoint goes away or comes back.
    """

    def __init__(
        self,
        services: ServicesConfig,
        *,
        gateway_name: str,
        config: ResilienceConfig,
        api_key: str | None,
        on_change: Callable[[str, str], None] = lambda name, why: None,
    ) -> None:
        self.config = config
        self._api_key = api_key
        self._on_change = on_change
        self._backends: dict[str, Backend] = {}
        for svc in services.services:
            if svc.name == gateway_name:
                continue
            addresses = list(svc.grpc.hosts) or [svc.grpc.address]
            self._backends[svc.name] = Backend(
                svc.name, [Endpoint(svc.name, a, config) for a in addresses]
            )
        self._watchers: list[asyncio.Task[None]] = []

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._backends)

    def get(self, name: str) -> Backend:
        """The backend called `name`.

        Raises:
            RpcError: NOT_FOUND naming the known backends.
        """
        backend = self._backends.get(name)
        if backend is None:
            known = ", ".join(sorted(self._backends)) or "none"
            raise RpcError(
                grpc.StatusCode.NOT_FOUND,
                f"no backend service {name!r} in services.json (known: {known})",
            )
        return backend

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every backend call carries: the API key and the request's trace ids."""
        key = (("x-api-key", self._api_key),) if self._api_key else ()
        return key + outgoing_metadata()

    # ------------------------------------------------------------------ health watches

    def start(self) -> None:
        for backend in self._backends.values():
            for ep in backend.endpoints:
                self._watchers.append(
                    asyncio.create_task(self._watch(ep), name=f"watch:{ep.address}")
                )

    async def _watch(self, ep: Endpoint) -> None:
        stub = health_pb2_grpc.HealthStub(ep.channel)
        failures = 0
        while True:
            try:
                call = stub.Watch(health_pb2.HealthCheckRequest(service=""))
                async for reply in call:
                    serving = reply.status == _SERVING
                    if serving and not ep.healthy:
                        ep.healthy = True
                        ep.breaker.reset()
                        failures = 0
                        self._on_change(ep.backend, f"{ep.address} is SERVING (again)")
                    elif not serving:
                        ep.healthy = False
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                log.debug("health watch of %s ended: %s", ep.address, exc.code().name)
            if ep.healthy:
                log.info("backend %s at %s went away", ep.backend, ep.address)
            ep.healthy = False
            await asyncio.sleep(_WATCH_BACKOFF_S[min(failures, len(_WATCH_BACKOFF_S) - 1)])
            failures += 1

    async def close(self) -> None:
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._watchers.clear()
        for backend in self._backends.values():
            for ep in backend.endpoints:
                await ep.channel.close()

    # ------------------------------------------------------------------ calls

    async def call(
        self, backend: Backend, path: str, payload: bytes, *, deadline_s: float | None = None
    ) -> bytes:
        """Call unary method `path` with serialized `payload`; retry UNAVAILABLE.

        Raises:
            grpc.aio.AioRpcError: the backend's own error (after retries for UNAVAILABLE).
            RpcError: UNAVAILABLE when every circuit is open.
        """
        cfg = self.config
        deadline = deadline_s if deadline_s is not None else cfg.call_timeout_seconds
        metadata = self.metadata()
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        for attempt in range(1, cfg.attempts + 1):
            ep = backend.pick()
            try:
                result: bytes = await ep.unary(path)(
                    payload, timeout=max(0.001, end - loop.time()), metadata=metadata
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in BREAKER_FAILURES:
                    ep.breaker.failure()
                else:
                    ep.breaker.success()
                if code not in RETRYABLE or attempt == cfg.attempts:
                    raise
                pause = cfg.delay_seconds(attempt)
                if loop.time() + pause >= end:
                    raise
                log.info(
                    "retrying %s on %s after %s (attempt %d)",
                    path,
                    backend.name,
                    code.name,
                    attempt,
                )
                await asyncio.sleep(pause)
                continue
            ep.breaker.success()
            return result
        raise AssertionError("unreachable")  # pragma: no cover
