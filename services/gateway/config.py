"""The ``virtufin.Config`` service: a read-only view of ``services.json``."""

from __future__ import annotations

import json

import grpc

from services.bootstrap.errors import RpcError
from virtufin.config import ServiceConfig, ServicesConfig
from virtufin.proto import ensure_built

ensure_built()
from virtufin.proto.gen import gateway_pb2, gateway_pb2_grpc  # noqa: E402

__all__ = ["ConfigServicer", "service_entry"]


def service_entry(svc: ServiceConfig) -> gateway_pb2.ServiceEntry:
    """The `ServiceEntry` message of one catalogue entry (``json`` holds all of it)."""
    return gateway_pb2.ServiceEntry(
        name=svc.name,
        dapr_app_id=svc.dapr_app_id,
        grpc_host=svc.grpc.host,
        grpc_port=svc.grpc.port,
        grpc_hosts=list(svc.grpc.hosts),
        json=json.dumps(svc.model_dump(mode="json", by_alias=True), separators=(",", ":")),
    )


class ConfigServicer(gateway_pb2_grpc.ConfigServicer):  # type: ignore[misc]
    """Implements ``virtufin.Config`` from the gateway's loaded catalogue."""

    def __init__(self, services: ServicesConfig) -> None:
        self._services = services

    async def ListServices(
        self, request: gateway_pb2.ConfigListServicesRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ConfigListServicesResponse:
        return gateway_pb2.ConfigListServicesResponse(
            services=[service_entry(s) for s in self._services.services]
        )

    async def GetService(
        self, request: gateway_pb2.GetServiceRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetServiceResponse:
        for svc in self._services.services:
            if svc.name == request.name:
                return gateway_pb2.GetServiceResponse(service=service_entry(svc))
        raise RpcError(grpc.StatusCode.NOT_FOUND, f"no service {request.name!r} in services.json")
