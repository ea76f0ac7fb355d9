"""`GatewayBridge`: blocking ``Gateway.InvokeJson`` calls for hosts of native workers.

A native worker's ``gateway_call(service, method, request)`` hands JSON bytes to its host and
waits for the answer in the same C call, so the host needs a call that blocks the calling thread
and nothing else. The bridge makes it on a synchronous gRPC channel: thread-safe, no event loop
involved, usable from the worker threads the engine runs such workers on (and from a safe-mode
child, which rebuilds it from `child_env`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

import grpc

from virtufin.client._async import default_target
from virtufin.errors import GatewayCallError
from virtufin.proto import ensure_built

ensure_built()
from virtufin.proto.gen import gateway_pb2  # noqa: E402

__all__ = ["DEFAULT_GATEWAY_CALL_TIMEOUT_SECONDS", "GatewayBridge"]

DEFAULT_GATEWAY_CALL_TIMEOUT_SECONDS: Final = 10.0
"""Deadline of one bridged call unless configured (``VIRTUFIN_GATEWAY_CALL_TIMEOUT_SECONDS``)."""
_INVOKE_JSON: Final = "/virtufin.Gateway/InvokeJson"
_ENV_TARGET: Final = "VIRTUFIN_GATEWAY_TARGET"
_ENV_KEY: Final = "VIRTUFIN_GATEWAY_API_KEY"
_ENV_TIMEOUT: Final = "VIRTUFIN_GATEWAY_CALL_TIMEOUT_SECONDS"
_STATUS_NAMES: Final = {code.value[0]: code.name for code in grpc.StatusCode}


class GatewayBridge:
    """``bridge(service, method, request_json) -> response_json`` through ``InvokeJson``.

    Args:
        target: the gateway's ``host:port`` (default `default_target`).
        api_key: sent as ``x-api-key`` (default ``$VIRTUFIN_API_KEY``).
        timeout: deadline of each call in seconds.

    Example:
        >>> bridge = GatewayBridge("127.0.0.1:5002", api_key="k")            # doctest: +SKIP
        >>> bridge("workmanager", "ListWorkers", b"{}")                      # doctest: +SKIP
        b'{"workers": [...]}'
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_GATEWAY_CALL_TIMEOUT_SECONDS,
    ) -> None:
        self.target = target or default_target()
        key = api_key if api_key is not None else os.environ.get("VIRTUFIN_API_KEY")
        self.api_key = key or None
        self.timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = (
            (("x-api-key", self.api_key),) if self.api_key else ()
        )
        self._channel = grpc.insecure_channel(self.target)
        self._invoke: Any = self._channel.unary_unary(
            _INVOKE_JSON,
            request_serializer=gateway_pb2.InvokeJsonRequest.SerializeToString,
            response_deserializer=gateway_pb2.InvokeJsonResponse.FromString,
        )

    def __call__(self, service: str, method: str, request: bytes) -> bytes:
        """Call `service`'s unary `method` with the JSON `request`; its JSON answer.

        Raises:
            GatewayCallError: the request is not UTF-8, the gateway refused the call or is
                unreachable (`backend` False), or the backend failed (`backend` True).
        """
        call = f"{service}.{method}"
        try:
            text = request.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise GatewayCallError(
                call, 3, "INVALID_ARGUMENT", f"the request is not UTF-8 JSON ({exc})"
            ) from None
        try:
            reply = self._invoke(
                gateway_pb2.InvokeJsonRequest(service=service, method=method, request_data=text),
                timeout=self.timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = (exc.details() if isinstance(exc, grpc.Call) else None) or code.name
            raise GatewayCallError(call, code.value[0], code.name, details) from None
        if not reply.success:
            status = _STATUS_NAMES.get(reply.status, str(reply.status))
            raise GatewayCallError(call, reply.status, status, reply.message, backend=True)
        return reply.response_data.encode("utf-8") if reply.response_data else b"{}"

    def child_env(self) -> dict[str, str]:
        """Environment variables from which `from_env` rebuilds this bridge in a child."""
        env = {_ENV_TARGET: self.target, _ENV_TIMEOUT: repr(self.timeout)}
        if self.api_key:
            env[_ENV_KEY] = self.api_key
        return env

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GatewayBridge | None:
        """The bridge `child_env` described (None when `env` names no gateway)."""
        target = env.get(_ENV_TARGET)
        if not target:
            return None
        timeout = float(env.get(_ENV_TIMEOUT) or DEFAULT_GATEWAY_CALL_TIMEOUT_SECONDS)
        return cls(target, api_key=env.get(_ENV_KEY) or "", timeout=timeout)

    def close(self) -> None:
        """Close the channel (idempotent)."""
        self._channel.close()
