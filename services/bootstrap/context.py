"""`ServiceContext`: what a service's ``serve(ctx)`` gets, and the lifecycle it runs.

Lifecycle of `ServiceContext.run`:

1. reflection is enabled for every servicer added, health says NOT_SERVING, the metrics
   endpoint and the gRPC server start;
2. ``startup`` runs (e.g. the WorkManager's recovery) while health still says NOT_SERVING;
3. health says SERVING until the first SIGTERM/SIGINT (or `request_stop`);
4. graceful shutdown: health NOT_SERVING, `stopping` is set (streams end), ``server.stop(grace)``,
   then shutdown hooks and adapters close, last opened first (the bus drains and acks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from services.bootstrap.health import Health
from services.bootstrap.interceptors import AuthInterceptor, RequestInterceptor
from services.bootstrap.metrics import Metrics, MetricsServer
from services.bootstrap.options import ServeConfig
from services.bootstrap.reflection import enable_reflection
from services.bootstrap.server import create_server
from services.bootstrap.shutdown import GracefulExit
from services.bootstrap.traced_bus import TracedBus
from virtufin.bus.port import EventBus
from virtufin.bus.validation import LaneValidator
from virtufin.config import ServiceConfig, ServicesConfig, Settings
from virtufin.errors import ConfigError
from virtufin.state.port import StateStore

__all__ = ["ServiceContext", "ShutdownHook", "create_context"]

ShutdownHook = Callable[[], Awaitable[None]]
_HOOK_TIMEOUT_S = 15.0


class ServiceContext:
    """One service process: its configuration, gRPC server, health, metrics and adapters.

    Built by `create_context`; handed to the service's ``async def serve(ctx)``.

    Attributes:
        name: the service's name in ``services.json``.
        config: the whole `ServeConfig` (``service``, ``services``, ``settings``, ``options``).
        server: the grpc.aio server, bound, not started.
        port: the bound gRPC port.
        health: the health servicer wrapper.
        metrics: the service's Prometheus registry and gRPC metrics.
        stopping: set when shutdown begins; long-lived streams end on it.
        log: the service's logger (``virtufin.<name>``).
    """

    def __init__(
        self,
        config: ServeConfig,
        *,
        server: grpc.aio.Server,
        port: int,
        metrics: Metrics,
        auth: AuthInterceptor,
        requests: RequestInterceptor | None = None,
        install_signal_handlers: bool = True,
    ) -> None:
        self.config = config
        self.name = config.service.name
        self.server = server
        self.port = port
        self.metrics = metrics
        self.auth = auth
        self._requests = requests
        self.health = Health(server)
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.log = logging.getLogger(f"virtufin.{self.name}")
        self._descriptors: list[ServiceDescriptor] = []
        self._hooks: list[tuple[str, ShutdownHook]] = []
        self._signals = install_signal_handlers
        self._metrics_server: MetricsServer | None = None
        self._closed = False

    # ------------------------------------------------------------------ configuration views

    @property
    def service(self) -> ServiceConfig:
        return self.config.service

    @property
    def services(self) -> ServicesConfig:
        return self.config.services

    @property
    def settings(self) -> Settings:
        return self.config.settings

    @property
    def health_port(self) -> int | None:
        """The bound metrics/health HTTP port (after `run` started it)."""
        return None if self._metrics_server is None else self._metrics_server.port

    # ------------------------------------------------------------------ building

    def add_servicer(
        self,
        add_to_server: Callable[[Any, grpc.aio.Server], None],
        servicer: Any,
        service: ServiceDescriptor,
    ) -> None:
        """Register a servicer; its service gets health and reflection entries.

        Its handlers are wrapped by the request handling (key check, context, errors,
        metrics) as they are registered, so calls pay for no interceptor pipeline.

        Example:
            >>> ctx.add_servicer(gateway_pb2_grpc.add_StateServicer_to_server, servicer,
            ...                  gateway_pb2.DESCRIPTOR.services_by_name["State"])  # doctest: +SKIP
        """
        target = self.server if self._requests is None else self._requests.registrar(self.server)
        add_to_server(servicer, target)
        self._descriptors.append(service)

    def on_shutdown(self, name: str, hook: ShutdownHook) -> None:
        """Run `hook` during shutdown, after the server stopped; last added runs first."""
        self._hooks.append((name, hook))

    async def open_state(self) -> StateStore:
        """The state store of `settings` (closed at shutdown)."""
        from virtufin.state.factory import create_state

        store = await create_state(self.settings)
        self.on_shutdown(f"state:{store.name}", store.close)
        return store

    async def open_bus(self, *, validator: LaneValidator | None = None) -> EventBus:
        """The bus of `settings` as a `TracedBus` (drained and closed at shutdown)."""
        from virtufin.bus.factory import create_bus

        inner = await create_bus(self.settings, validator=validator, name=self.name)
        bus = TracedBus(inner)
        self.on_shutdown(f"bus:{bus.name}", bus.close)
        return bus

    # ------------------------------------------------------------------ running

    def request_stop(self) -> None:
        """Begin the graceful shutdown (what the first signal does)."""
        self.stopping.set()

    async def run(self, *, startup: ShutdownHook | None = None) -> None:
        """Serve until stopped; see the module docstring for the order of events.

        Raises:
            Exception: whatever `startup` raised (after shutting down cleanly).
        """
        guard = GracefulExit(self.stopping) if self._signals else contextlib.nullcontext()
        with guard:
            names = enable_reflection(self.server, self._descriptors)
            for descriptor in self._descriptors:
                await self.health.track(descriptor.full_name)
            await self.health.not_serving()
            options = self.config.options
            try:
                if options.health_port is not None:
                    await self._start_metrics(options.grpc_host, options.health_port)
                await self.server.start()
                self.log.info(
                    "listening",
                    extra={
                        "grpc_port": self.port,
                        "health_port": self.health_port,
                        "services": names,
                    },
                )
                if not self.auth.enabled:
                    self.log.warning("no API keys configured (VIRTUFIN_API_KEYS): auth is off")
                if startup is not None and not await self._startup(startup):
                    return
                await self.health.serving()
                self.metrics.serving.set(1)
                self.ready.set()
                self.log.info("serving", extra={"grpc_port": self.port})
                await self.stopping.wait()
            finally:
                await self._shutdown()

    async def _start_metrics(self, host: str, port: int) -> None:
        self._metrics_server = MetricsServer(
            self.metrics, lambda: self.health.status, host=host, port=port
        )
        try:
            await self._metrics_server.start()
        except OSError as exc:
            self._metrics_server = None
            raise ConfigError(
                "serve options", "health_port", f"cannot bind {host}:{port} ({exc.strerror})"
            ) from None

    async def _startup(self, startup: ShutdownHook) -> bool:
        """Run `startup` unless a stop comes first; False when stopped meanwhile."""
        task: asyncio.Future[None] = asyncio.ensure_future(startup())
        stop: asyncio.Future[Any] = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
        task.result()  # re-raise a failed start-up
        return True

    async def close(self) -> None:
        """Release everything opened so far if `run` never did (``serve`` failed early)."""
        if not self._closed:
            await self._shutdown()

    async def _shutdown(self) -> None:
        self._closed = True
        self.stopping.set()
        self.metrics.serving.set(0)
        await self.health.shutting_down()
        grace = self.config.options.grace_seconds
        self.log.info("shutting down", extra={"grace_seconds": grace})
        await self.server.stop(grace)
        while self._hooks:
            name, hook = self._hooks.pop()
            try:
                await asyncio.wait_for(hook(), _HOOK_TIMEOUT_S)
            except Exception:
                self.log.exception("shutdown hook %s failed", name)
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        self.log.info("stopped")


async def create_context(
    config: ServeConfig, *, install_signal_handlers: bool = True
) -> ServiceContext:
    """Bind the server of `config` and wrap it in a `ServiceContext` (call inside the loop).

    Raises:
        ConfigError: the port cannot be bound.
    """
    metrics = Metrics(config.service.name)
    auth = AuthInterceptor(config.settings.api_keys)
    server, port = create_server(
        config.options.address, max_receive_bytes=config.options.max_message_bytes
    )
    return ServiceContext(
        config,
        server=server,
        port=port,
        metrics=metrics,
        auth=auth,
        requests=RequestInterceptor(metrics, auth=auth),
        install_signal_handlers=install_signal_handlers,
    )
