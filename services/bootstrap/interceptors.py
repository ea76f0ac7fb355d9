"""Server-side request handling: ``x-api-key`` authentication, per-request context and accounting.

`RequestInterceptor` wraps every handler of a service: it checks the ``x-api-key`` (through an
`AuthInterceptor`'s key set), sets the correlation id and ``traceparent`` contextvars
(`services.bootstrap.tracing`), maps escaping exceptions to a status through `status_for` (the
one place that does), logs, and counts the call in the service's metrics. Health and reflection
are left alone (probes and tools carry no key).

Services apply it at registration (`RequestInterceptor.registrar`): each servicer's handlers are
wrapped once, when the server looks them up, so a call pays for none of grpc.aio's interceptor
pipeline (a coroutine and a continuation per call per interceptor). It also works as a classic
server interceptor (`intercept_service`), and `AuthInterceptor` alone refuses unknown keys.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import grpc

from services.bootstrap.errors import status_for
from services.bootstrap.metrics import Metrics
from services.bootstrap.tracing import (
    CORRELATION_HEADER,
    TRACEPARENT_HEADER,
    correlation_id,
    set_request_context,
)

__all__ = ["API_KEY_HEADER", "OPEN_METHOD_PREFIXES", "AuthInterceptor", "RequestInterceptor"]

API_KEY_HEADER: Final = "x-api-key"
OPEN_METHOD_PREFIXES: Final = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
_UNAUTHENTICATED: Final = grpc.StatusCode.UNAUTHENTICATED
_MAX_WRAPPED: Final = 4096
log = logging.getLogger("virtufin.rpc")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]


def _metadata_value(details: grpc.HandlerCallDetails, name: str) -> str | None:
    for key, value in details.invocation_metadata or ():
        if key == name:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


def _refusing_handler(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that aborts with UNAUTHENTICATED."""

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(_UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Require one of `api_keys` in the ``x-api-key`` metadata (constant-time comparison).

    With no keys configured, every call passes (local development); the bootstrap logs a
    warning once at start-up in that case.

    Args:
        api_keys: the accepted keys (`Settings.api_keys`).
        open_prefixes: method paths that need no key (health and reflection).
    """

    def __init__(
        self, api_keys: Iterable[str], *, open_prefixes: tuple[str, ...] = OPEN_METHOD_PREFIXES
    ) -> None:
        self._keys = tuple(k.encode() for k in api_keys if k)
        self._open = open_prefixes

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def accepts(self, key: str | None) -> bool:
        """Whether `key` is one of the configured keys (always, when none are configured)."""
        if not self._keys:
            return True
        if key is None:
            return False
        given = key.encode()
        return any(hmac.compare_digest(given, known) for known in self._keys)

    def refusal(self, key: str | None) -> str | None:
        """Why a call carrying `key` is refused (None: it may proceed)."""
        if self.accepts(key):
            return None
        return "missing x-api-key metadata" if key is None else "invalid API key (x-api-key)"

    def check(
        self, handler: grpc.RpcMethodHandler | None, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """`handler` when the call may proceed, else a handler refusing it."""
        if handler is None or not self._keys or handler_call_details.method.startswith(self._open):
            return handler
        reason = self.refusal(_metadata_value(handler_call_details, API_KEY_HEADER))
        if reason is None:
            return handler
        log.info("refused %s: %s", handler_call_details.method, reason)
        return _refusing_handler(handler, reason)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        return self.check(await continuation(handler_call_details), handler_call_details)


async def _abort_for(exc: Exception, context: grpc.aio.ServicerContext, method: str) -> None:
    code, message = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error("%s failed", method, exc_info=exc)
    else:
        log.info("%s refused: %s %s", method, code.name, message)
    await context.abort(code, message)


class _GuardedHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A servicer's generic handler whose method handlers come out wrapped."""

    def __init__(self, inner: grpc.GenericRpcHandler, requests: RequestInterceptor) -> None:
        self._inner = inner
        self._requests = requests

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        return self._requests.wrap(handler, handler_call_details.method)


class _Registrar:
    """What a generated ``add_<Service>Servicer_to_server`` sees instead of the server."""

    def __init__(self, server: grpc.aio.Server, requests: RequestInterceptor) -> None:
        self._server = server
        self._requests = requests

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_GuardedHandler(h, self._requests) for h in handlers)
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {
                name: self._requests.wrap(handler, f"/{service_name}/{name}")
                for name, handler in method_handlers.items()
            },
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class RequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Per-request key check, correlation/trace context, error mapping, logging and metrics.

    The wrapped handler of each method is built once and cached; each call reads its key and
    ids from the call's own metadata in one pass. A refused key aborts with UNAUTHENTICATED
    before the servicer runs (and is counted like any call).

    Args:
        metrics: where calls are counted.
        auth: the key check (None: none here).
        skip_prefixes: methods left untouched (health and reflection).

    Example:
        >>> requests = RequestInterceptor(Metrics("demo"), auth=AuthInterceptor(["k"]))
        >>> add_GatewayServicer_to_server(servicer, requests.registrar(server))  # doctest: +SKIP
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        auth: AuthInterceptor | None = None,
        skip_prefixes: tuple[str, ...] = OPEN_METHOD_PREFIXES,
    ) -> None:
        self._metrics = metrics
        self._auth = auth if auth is not None and auth.enabled else None
        self._skip = skip_prefixes
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def registrar(self, server: grpc.aio.Server) -> Any:
        """A stand-in for `server` to hand to ``add_<Service>Servicer_to_server``: the handlers
        it registers are wrapped (health and reflection, registered on `server`, are not)."""
        return _Registrar(server, self)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        return self.wrap(await continuation(handler_call_details), handler_call_details.method)

    def wrap(
        self, handler: grpc.RpcMethodHandler | None, method: str
    ) -> grpc.RpcMethodHandler | None:
        """`handler` wrapped (cached per method; open methods and None pass unchanged)."""
        if handler is None or method.startswith(self._skip):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        if len(self._wrapped) < _MAX_WRAPPED:
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        service, _, name = method.lstrip("/").partition("/")
        if handler.unary_unary is not None:
            return handler._replace(
                unary_unary=self._wrap_unary(handler.unary_unary, service, name)
            )
        if handler.stream_unary is not None:
            return handler._replace(
                stream_unary=self._wrap_unary(handler.stream_unary, service, name)
            )
        if handler.unary_stream is not None:
            return handler._replace(
                unary_stream=self._wrap_stream(handler.unary_stream, service, name)
            )
        return handler._replace(
            stream_stream=self._wrap_stream(handler.stream_stream, service, name)
        )

    def _begin(self, context: grpc.aio.ServicerContext, method: str) -> str | None:
        """Set the request's context and count it in flight; the refusal reason, if any."""
        key = cid = trace = None
        for name, value in context.invocation_metadata() or ():
            if name == API_KEY_HEADER:
                key = value
            elif name == CORRELATION_HEADER:
                cid = value
            elif name == TRACEPARENT_HEADER:
                trace = value
        set_request_context(
            cid if isinstance(cid, str) else None, trace if isinstance(trace, str) else None
        )
        context.set_trailing_metadata(((CORRELATION_HEADER, correlation_id() or ""),))
        self._metrics.in_flight.inc()
        if self._auth is None:
            return None
        reason = self._auth.refusal(key if isinstance(key, str) else None)
        if reason is not None:
            log.info("refused /%s: %s", method, reason)
        return reason

    def _finish(self, service: str, name: str, context: Any, started: float, error: bool) -> None:
        code = context.code()
        if code is None:
            label = "UNKNOWN" if error else "OK"
        else:
            label = code.name if isinstance(code, grpc.StatusCode) else str(code)
        self._metrics.observe(service, name, label, time.perf_counter() - started)
        self._metrics.in_flight.dec()

    def _wrap_unary(self, inner: Any, service: str, name: str) -> Callable[..., Awaitable[Any]]:
        method = f"{service}/{name}"
        is_coroutine = asyncio.iscoroutinefunction(inner)

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            refused = self._begin(context, method)
            failed = False
            try:
                if refused is not None:
                    await context.abort(_UNAUTHENTICATED, refused)
                if is_coroutine:
                    return await inner(request, context)
                result = inner(request, context)
                if inspect.isawaitable(result):
                    result = await result
                return result
            except Exception as exc:
                failed = True
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await _abort_for(exc, context, method)
            finally:
                self._finish(service, name, context, started, failed)

        return behavior

    def _wrap_stream(self, inner: Any, service: str, name: str) -> Callable[..., Any]:
        method = f"{service}/{name}"

        if not inspect.isasyncgenfunction(inner):
            return self._wrap_unary(inner, service, name)

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            refused = self._begin(context, method)
            failed = False
            try:
                if refused is not None:
                    await context.abort(_UNAUTHENTICATED, refused)
                async for item in inner(request, context):
                    yield item
            except Exception as exc:
                failed = True
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                await _abort_for(exc, context, method)
            finally:
                self._finish(service, name, context, started, failed)

        return behavior
