"""Build a grpc.aio server apart from running it: `create_server(address)` → ``(server, port)``.

Tests bind port 0 and read the port back; services bind their ``services.json`` port. Request
size is limited by ``grpc.max_receive_message_length`` (oversized requests fail with
RESOURCE_EXHAUSTED before any handler runs) and ``SO_REUSEPORT`` is off, so that a second
process on a taken port fails loudly instead of silently sharing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import grpc

from virtufin.errors import ConfigError

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "create_server"]

DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
"""Largest request a service accepts (4 MiB, gRPC's own default), unless configured."""


def create_server(
    address: str,
    *,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    max_receive_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_send_bytes: int | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server bound (not started) to `address` and the port it got.

    Args:
        address: ``host:port``; port 0 picks a free port.
        interceptors: applied in order, outermost first.
        max_receive_bytes: request size limit.
        max_send_bytes: response size limit (default: same as `max_receive_bytes`).
        options: further channel arguments.

    Raises:
        ConfigError: the address cannot be bound.

    Example:
        >>> server, port = create_server("127.0.0.1:0")     # doctest: +SKIP
    """
    server_options = [
        ("grpc.max_receive_message_length", max_receive_bytes),
        ("grpc.max_send_message_length", max_send_bytes or max_receive_bytes),
        ("grpc.so_reuseport", 0),
        *options,
    ]
    server = grpc.aio.server(interceptors=list(interceptors), options=server_options)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError("grpc", address, f"cannot bind ({exc})") from None
    if port == 0:
        raise ConfigError("grpc", address, "cannot bind (port in use or bad address)")
    return server, port
