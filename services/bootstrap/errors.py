"""One mapping from Virtufin's errors to gRPC status codes, used by every service.

Service code raises `virtufin.errors` exceptions (or `RpcError` for a request-level refusal
that has no domain error); the request interceptor turns whatever escapes a handler into
``context.abort(code, message)`` through `status_for`. Nothing else picks status codes.

- `RpcError`: its own `code`
- `ConcurrencyError`: ABORTED
- `TopicError`, `EnvelopeError`, `ConfigError`, `WorkerParamsError`, pydantic's
  `ValidationError`, `ValueError`: INVALID_ARGUMENT
- `ScenarioNotFoundError`: NOT_FOUND; other `ScenarioError`s: FAILED_PRECONDITION
- `PublishRejectedError`: PERMISSION_DENIED; other `BusError`s: UNAVAILABLE
- `WorkerLoadError`: FAILED_PRECONDITION; `WorkerError`: NOT_FOUND for an unknown worker,
  ALREADY_EXISTS for a taken id, FAILED_PRECONDITION otherwise
- `StateError`: UNAVAILABLE when the store is locked or closed, FAILED_PRECONDITION otherwise
- `TimeoutError`: DEADLINE_EXCEEDED
- anything else: INTERNAL (logged with its traceback; the message names only the type)
"""

from __future__ import annotations

import grpc
from pydantic import ValidationError

from virtufin.errors import (
    BusError,
    ConcurrencyError,
    ConfigError,
    EnvelopeError,
    PublishRejectedError,
    ScenarioError,
    ScenarioNotFoundError,
    StateError,
    TopicError,
    VirtufinError,
    WorkerError,
    WorkerLoadError,
    WorkerParamsError,
)

__all__ = ["RpcError", "status_for"]


class RpcError(VirtufinError):
    """A request refused with a chosen gRPC status (bad field, unknown name, …).

    Example:
        >>> raise RpcError(grpc.StatusCode.NOT_FOUND, "no service 'x' in services.json")
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


def _worker_status(exc: WorkerError) -> grpc.StatusCode:
    if isinstance(exc, WorkerParamsError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, WorkerLoadError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if "not found" in exc.reason or "no such worker" in exc.reason or "unknown" in exc.reason:
        return grpc.StatusCode.NOT_FOUND
    if "already exists" in exc.reason:
        return grpc.StatusCode.ALREADY_EXISTS
    return grpc.StatusCode.FAILED_PRECONDITION


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and message a failed request reports for `exc`.

    Example:
        >>> status_for(ConcurrencyError("k", "e1"))[0]
        <StatusCode.ABORTED: (10, 'aborted')>
    """
    code: grpc.StatusCode
    if isinstance(exc, RpcError):
        return exc.code, exc.message
    if isinstance(exc, ConcurrencyError):
        code = grpc.StatusCode.ABORTED
    elif isinstance(exc, TopicError | EnvelopeError | ConfigError | ValidationError | ValueError):
        code = grpc.StatusCode.INVALID_ARGUMENT
    elif isinstance(exc, ScenarioNotFoundError):
        code = grpc.StatusCode.NOT_FOUND
    elif isinstance(exc, ScenarioError):
        code = grpc.StatusCode.FAILED_PRECONDITION
    elif isinstance(exc, PublishRejectedError):
        code = grpc.StatusCode.PERMISSION_DENIED
    elif isinstance(exc, BusError):
        code = grpc.StatusCode.UNAVAILABLE
    elif isinstance(exc, WorkerError):
        code = _worker_status(exc)
    elif isinstance(exc, StateError):
        locked = "locked" in exc.reason or "closed" in exc.reason
        code = grpc.StatusCode.UNAVAILABLE if locked else grpc.StatusCode.FAILED_PRECONDITION
    elif isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc) or "timed out"
    else:
        return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__})"
    return code, str(exc)
