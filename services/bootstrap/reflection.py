"""gRPC server reflection on every service, named from the generated ``DESCRIPTOR``s."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_reflection.v1alpha import reflection

from services.bootstrap.health import HEALTH_SERVICE_NAME

__all__ = ["enable_reflection"]


def enable_reflection(server: grpc.aio.Server, services: Iterable[ServiceDescriptor]) -> list[str]:
    """Expose `services`, health and reflection itself; return the names listed.

    Example:
        >>> enable_reflection(server, [gateway_pb2.DESCRIPTOR.services_by_name["Gateway"]])
        ... # doctest: +SKIP
    """
    names = [svc.full_name for svc in services]
    names += [HEALTH_SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    return names
