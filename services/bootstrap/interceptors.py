"""Server interceptors: ``x-api-key`` authentication, then per-request context and accounting.

`AuthInterceptor` refuses a missing or unknown key with UNAUTHENTICATED before any handler
runs; health and reflection are open (probes and tools carry no key). `RequestInterceptor`
(which services run with the auth check folded in: one interceptor, one pipeline step) wraps
every other handler: it sets the correlation id and ``traceparent`` contextvars
(`services.bootstrap.tracing`), maps escaping exceptions to a status through `status_for` (the
one place that does), logs, and counts the call in the service's metrics.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
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
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

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

    def check(
        self, handler: grpc.RpcMethodHandler | None, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """`handler` when the call may proceed, else a handler refusing it."""
        if handler is None or not self._keys or handler_call_details.method.startswith(self._open):
            return handler
        key = _metadata_value(handler_call_details, API_KEY_HEADER)
        if self.accepts(key):
            return handler
        reason = "missing x-api-key metadata" if key is None else "invalid API key (x-api-key)"
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


class RequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Per-request correlation/trace context, error mapping, logging and metrics.

    The wrapped handler of each method is built once and cached; each call reads its ids from
    the call's own metadata.

    Each interceptor in a grpc.aio server costs every call a pipeline step (~50 µs), so with
    `auth` given this one interceptor also does `AuthInterceptor`'s check, first.

    Args:
        metrics: where calls are counted.
        auth: the key check to run first (None: none here).
        skip_prefixes: methods left untouched (health and reflection).
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        auth: AuthInterceptor | None = None,
        skip_prefixes: tuple[str, ...] = OPEN_METHOD_PREFIXES,
    ) -> None:
        self._metrics = metrics
        self._auth = auth
        self._skip = skip_prefixes
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if self._auth is not None:
            handler = self._auth.check(handler, handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(self._skip):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        if len(self._wrapped) < 4096:  # refusing handlers are new objects: do not grow forever
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

    def _begin(self, context: grpc.aio.ServicerContext) -> float:
        cid = trace = None
        for key, value in context.invocation_metadata() or ():
            if key == CORRELATION_HEADER:
                cid = value if isinstance(value, str) else None
            elif key == TRACEPARENT_HEADER:
                trace = value if isinstance(value, str) else None
        set_request_context(cid, trace)
        context.set_trailing_metadata(((CORRELATION_HEADER, correlation_id() or ""),))
        self._metrics.in_flight.inc()
        return time.perf_counter()

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

        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = self._begin(context)
            failed = False
            try:
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
            started = self._begin(context)
            failed = False
            try:
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
