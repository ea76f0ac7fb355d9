"""Prometheus metrics and the small HTTP endpoint on the service's ``healthPort``.

``GET /metrics`` answers the Prometheus text format from the service's own registry;
``GET /healthz`` answers 200 ``SERVING`` or 503 with the current status (the same answer as the
gRPC health check), for probes that do not speak gRPC. The endpoint is a few lines of asyncio
rather than prometheus-client's threaded server, so it lives and dies with the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

__all__ = ["Metrics", "MetricsServer"]

log = logging.getLogger(__name__)
_LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
)  # fmt: skip
_MAX_REQUEST_LINE: Final = 8192


class Metrics:
    """One registry per service, with the gRPC server metrics every service has.

    Services add their own instruments on `registry` (``Gauge(..., registry=metrics.registry)``).

    Example:
        >>> m = Metrics("gateway")
        >>> m.observe("virtufin.Gateway", "InvokeJson", "OK", 0.001)
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.handled = Counter(
            "virtufin_grpc_server_handled",
            "RPCs completed, by method and status code.",
            ("grpc_service", "grpc_method", "grpc_code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "virtufin_grpc_server_handling_seconds",
            "RPC handling time (for streams: the stream's lifetime).",
            ("grpc_service", "grpc_method"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "virtufin_grpc_server_in_flight",
            "RPCs being handled now.",
            registry=self.registry,
        )
        self.serving = Gauge(
            "virtufin_service_serving",
            "1 while the health check reports SERVING.",
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def observe(self, grpc_service: str, method: str, code: str, seconds: float) -> None:
        """Count one finished RPC and its duration."""
        key = (grpc_service, method, code)
        pair = self._children.get(key)
        if pair is None:
            pair = (
                self.handled.labels(grpc_service, method, code),
                self.latency.labels(grpc_service, method),
            )
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of the registry."""
        return generate_latest(self.registry)


class MetricsServer:
    """``/metrics`` and ``/healthz`` over HTTP/1.1 on `host`:`port` (0 = any free port).

    Args:
        metrics: whose registry ``/metrics`` renders.
        status: returns the overall health status name (``SERVING``, ``NOT_SERVING``, …).
    """

    def __init__(
        self, metrics: Metrics, status: Callable[[], str], *, host: str, port: int
    ) -> None:
        self._metrics = metrics
        self._status = status
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (after `start`)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            while (await asyncio.wait_for(reader.readline(), 5.0)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            parts = line[:_MAX_REQUEST_LINE].decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, self._metrics.render()
            elif path in ("/healthz", "/health", "/"):
                health = self._status()
                status = "200 OK" if health == "SERVING" else "503 Service Unavailable"
                ctype, body = "text/plain; charset=utf-8", f"{health}\n".encode()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"try /metrics or /healthz\n"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode("latin-1")
            writer.write(head if parts and parts[0] == "HEAD" else head + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError, UnicodeDecodeError) as exc:
            log.debug("metrics endpoint: dropped a request (%s)", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
