"""The shared server bootstrap of Virtufin's services: one short module per server concern.

| module          | concern                                                             |
|-----------------|---------------------------------------------------------------------|
| `server`        | `create_server(address)` → ``(server, port)``, request size limits  |
| `health`        | ``grpc.health.v1``, NOT_SERVING during start-up and shutdown        |
| `reflection`    | reflection named from the generated ``DESCRIPTOR``s                 |
| `interceptors`  | ``x-api-key`` auth; correlation/trace context, errors, metrics      |
| `errors`        | the one mapping from our errors to gRPC status codes                |
| `tracing`       | correlation id and W3C ``traceparent`` contextvars                  |
| `traced_bus`    | the bus wrapper carrying ``traceparent`` into and out of events      |
| `metrics`       | Prometheus registry; ``/metrics`` and ``/healthz`` on ``healthPort`` |
| `logs`          | JSON log lines                                                      |
| `options`       | ``services.json`` + environment + flags → `ServeConfig`             |
| `shutdown`      | first signal: graceful stop; second: exit now                       |
| `context`       | `ServiceContext` handed to ``serve(ctx)`` and its lifecycle          |

The serve convention is described in `services` (the package docstring).
"""

from services.bootstrap.context import ServiceContext, ShutdownHook, create_context
from services.bootstrap.errors import RpcError, status_for
from services.bootstrap.health import HEALTH_SERVICE_NAME, Health
from services.bootstrap.interceptors import (
    API_KEY_HEADER,
    OPEN_METHOD_PREFIXES,
    AuthInterceptor,
    RequestInterceptor,
)
from services.bootstrap.logs import JsonFormatter, configure_logging
from services.bootstrap.metrics import Metrics, MetricsServer
from services.bootstrap.options import ServeConfig, ServeOptions, load_serve_config
from services.bootstrap.reflection import enable_reflection
from services.bootstrap.server import DEFAULT_MAX_MESSAGE_BYTES, create_server
from services.bootstrap.shutdown import GracefulExit
from services.bootstrap.traced_bus import TracedBus

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "HEALTH_SERVICE_NAME",
    "OPEN_METHOD_PREFIXES",
    "AuthInterceptor",
    "GracefulExit",
    "Health",
    "JsonFormatter",
    "Metrics",
    "MetricsServer",
    "RequestInterceptor",
    "RpcError",
    "ServeConfig",
    "ServeOptions",
    "ServiceContext",
    "ShutdownHook",
    "TracedBus",
    "configure_logging",
    "create_context",
    "create_server",
    "enable_reflection",
    "load_serve_config",
    "status_for",
]
