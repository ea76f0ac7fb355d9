"""The client's one error type."""

from __future__ import annotations

import grpc

from virtufin.errors import VirtufinError

__all__ = ["ClientError"]


class ClientError(VirtufinError):
    """A gateway call failed: `code` is the gRPC status, `call` what was called.

    `backend` is True when the gateway reached the backend and the backend refused (an
    in-band failure of ``Invoke``/``InvokeJson``), False when the gateway itself refused.
    """

    def __init__(
        self, code: grpc.StatusCode, message: str, *, call: str, backend: bool = False
    ) -> None:
        self.code = code
        self.message = message
        self.call = call
        self.backend = backend
        super().__init__(f"{call}: {code.name}: {message}")
