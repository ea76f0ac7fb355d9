"""Standard gRPC health (``grpc.health.v1``) for every service, with start-up and shutdown states.

Every registered service name and the overall entry (``""``) start NOT_SERVING, turn SERVING
once start-up (e.g. recovery) is done, and go NOT_SERVING for good on graceful shutdown
(`HealthServicer.enter_graceful_shutdown`), so load balancers stop sending traffic before the
server drains.

``Watch`` is the aio servicer's with two fixes: watchers of one service share a notification
that no watcher can remove (the stock servicer deletes it when any one watcher leaves, leaving
the others deaf), and at shutdown each stream sends NOT_SERVING and then ends, so
``server.stop(grace)`` does not wait out its grace for gateways that watch us.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

__all__ = ["HEALTH_SERVICE_NAME", "Health"]

HEALTH_SERVICE_NAME: Final[str] = health.SERVICE_NAME
_SERVING: Final = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING: Final = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN: Final = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class _Servicer(health.aio.HealthServicer):  # type: ignore[misc]
    """The aio `HealthServicer` with the shared, shutdown-aware ``Watch``."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: dict[str, Any] = {"": _SERVING}
        self._changed = asyncio.Condition()
        self._closed = False

    async def changed(self, service: str, status: Any) -> None:
        self.statuses[service] = status
        async with self._changed:
            self._changed.notify_all()

    async def close_watches(self) -> None:
        self._closed = True
        async with self._changed:
            self._changed.notify_all()

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last = None
        while True:
            status = self.statuses.get(request.service, _UNKNOWN)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            if self._closed:
                return
            async with self._changed:
                if self.statuses.get(request.service, _UNKNOWN) == last and not self._closed:
                    await self._changed.wait()


class Health:
    """The health servicer of one server plus the names it reports on.

    Example:
        >>> h = Health(server)                          # doctest: +SKIP
        >>> await h.track("virtufin.Gateway")          # doctest: +SKIP
        >>> await h.serving()                           # doctest: +SKIP
    """

    def __init__(self, server: grpc.aio.Server) -> None:
        self.servicer = _Servicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        self._names: list[str] = [""]
        self._status = "NOT_SERVING"

    @property
    def status(self) -> str:
        """The overall status name: ``NOT_SERVING`` until `serving`, again after shutdown."""
        return self._status

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._names)

    async def _set_all(self, status: Any) -> None:
        for name in self._names:
            await self.servicer.set(name, status)
            await self.servicer.changed(name, status)

    async def track(self, service_name: str) -> None:
        """Report on `service_name` too (NOT_SERVING until `serving`)."""
        if service_name not in self._names:
            self._names.append(service_name)
        status = _SERVING if self._status == "SERVING" else _NOT_SERVING
        await self.servicer.set(service_name, status)
        await self.servicer.changed(service_name, status)

    async def not_serving(self) -> None:
        """Every name NOT_SERVING (start-up, or a dependency is down)."""
        if self._status == "SHUTTING_DOWN":
            return
        self._status = "NOT_SERVING"
        await self._set_all(_NOT_SERVING)

    async def serving(self) -> None:
        """Every name SERVING (ignored once shutdown began)."""
        if self._status == "SHUTTING_DOWN":
            return
        self._status = "SERVING"
        await self._set_all(_SERVING)

    async def shutting_down(self) -> None:
        """Every name NOT_SERVING, permanently; open watches get it and end."""
        self._status = "SHUTTING_DOWN"
        await self.servicer.enter_graceful_shutdown()
        for name in self._names:
            await self.servicer.changed(name, _NOT_SERVING)
        await self.servicer.close_watches()
