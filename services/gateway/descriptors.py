"""What each backend serves, learned through its gRPC reflection, and the cache of it.

`fetch_schema` asks one reflection stream for the service list and the files declaring them
(with their dependencies), and builds a private `DescriptorPool`, from which message classes are
made for JSON ↔ protobuf conversion. `SchemaCache` keeps one `BackendSchema` per backend until
`invalidate` (a health-watch change, an UNIMPLEMENTED answer); a reload whose fingerprint (hash
of the files) differs is logged as a schema change. A schema also keeps what the hot path
needs per method name as callers spell it (`BackendSchema.route`: descriptor, gRPC path,
message classes) and its `JsonCodec`, so both go with it when it is invalidated.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message import Message
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.bootstrap.errors import RpcError
from services.gateway.backends import Backend, BackendPool
from services.gateway.jsoncodec import JsonCodec

__all__ = ["INFRA_SERVICES", "BackendSchema", "Route", "SchemaCache", "fetch_schema", "path_of"]

log = logging.getLogger(__name__)
INFRA_SERVICES: Final = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
_REFLECTION_TIMEOUT_S: Final = 10.0
_MAX_ROUTES: Final = 1024  # spellings of method names kept per backend


@dataclass(frozen=True, slots=True)
class Route:
    """One resolved method of a backend: its descriptor, gRPC path and message classes."""

    method: MethodDescriptor
    path: str
    request_class: type[Message]
    response_class: type[Message]


@dataclass
class BackendSchema:
    """The services and methods one backend exposes, with a pool to make message classes."""

    backend: str
    services: tuple[str, ...]
    pool: descriptor_pool.DescriptorPool
    fingerprint: str
    methods: dict[str, MethodDescriptor] = field(default_factory=dict)
    codec: JsonCodec = field(default_factory=JsonCodec)
    _classes: dict[str, type[Message]] = field(default_factory=dict)
    _routes: dict[str, Route] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bare: dict[str, list[MethodDescriptor]] = {}
        for name in self.services:
            svc = self.pool.FindServiceByName(name)
            for method in svc.methods:
                self.methods[f"{svc.full_name}/{method.name}"] = method
                bare.setdefault(method.name, []).append(method)
        self._bare = bare

    def method(self, name: str) -> MethodDescriptor:
        """Resolve ``CreateWorker``, ``virtufin.WorkManager/CreateWorker`` or ``/…/…``.

        Raises:
            RpcError: INVALID_ARGUMENT (empty or ambiguous name), NOT_FOUND (no such method).
        """
        key = name.strip().lstrip("/")
        if not key:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, "method is required")
        if "/" in key:
            found = self.methods.get(key)
            if found is None and "." not in key.split("/")[0]:
                found = next((m for k, m in self.methods.items() if k.endswith("." + key)), None)
        else:
            candidates = self._bare.get(key, [])
            if len(candidates) > 1:
                options = ", ".join(f"{m.containing_service.full_name}/{key}" for m in candidates)
                raise RpcError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"method {key!r} of {self.backend!r} is ambiguous; qualify it ({options})",
                )
            found = candidates[0] if candidates else None
        if found is None:
            raise RpcError(
                grpc.StatusCode.NOT_FOUND,
                f"backend {self.backend!r} has no method {name!r} (services: "
                f"{', '.join(self.services) or 'none'})",
            )
        return found

    def route(self, name: str) -> Route:
        """`method` of `name` with its path and message classes (cached per spelling).

        Raises:
            RpcError: as `method`.
        """
        found = self._routes.get(name)
        if found is None:
            method = self.method(name)
            found = Route(
                method,
                path_of(method),
                self.message_class(method.input_type),
                self.message_class(method.output_type),
            )
            if len(self._routes) < _MAX_ROUTES:
                self._routes[name] = found
        return found

    def message_class(self, descriptor: Descriptor) -> type[Message]:
        """The Python class of a message type of this backend (cached)."""
        cls = self._classes.get(descriptor.full_name)
        if cls is None:
            cls = message_factory.GetMessageClass(descriptor)
            self._classes[descriptor.full_name] = cls
        return cls


def path_of(method: MethodDescriptor) -> str:
    """The gRPC path ``/<package>.<Service>/<Method>``."""
    return f"/{method.containing_service.full_name}/{method.name}"


async def _exchange(
    call: Any, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    await call.write(request)
    reply: reflection_pb2.ServerReflectionResponse = await call.read()
    if reply is grpc.aio.EOF:
        raise RpcError(grpc.StatusCode.UNAVAILABLE, "reflection stream ended early")
    if reply.HasField("error_response"):
        raise RpcError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"reflection error {reply.error_response.error_code}: "
            f"{reply.error_response.error_message}",
        )
    return reply


def _add_files(reply: reflection_pb2.ServerReflectionResponse, files: dict[str, Any]) -> None:
    for raw in reply.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        files.setdefault(proto.name, proto)


def _build_pool(
    files: dict[str, descriptor_pb2.FileDescriptorProto],
) -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        proto = files[name]
        for dep in proto.dependency:
            add(dep)
        pool.Add(proto)
        added.add(name)

    for name in sorted(files):
        add(name)
    return pool


async def fetch_schema(backend: str, channel: grpc.aio.Channel) -> BackendSchema:
    """Ask `channel`'s reflection service for everything `backend` serves.

    Raises:
        grpc.aio.AioRpcError: the backend cannot be reached (or has no reflection).
        RpcError: the reflection answers are unusable.
    """
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(timeout=_REFLECTION_TIMEOUT_S)
    try:
        listing = await _exchange(call, reflection_pb2.ServerReflectionRequest(list_services=""))
        names = sorted(
            s.name for s in listing.list_services_response.service if s.name not in INFRA_SERVICES
        )
        files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        for name in names:
            reply = await _exchange(
                call, reflection_pb2.ServerReflectionRequest(file_containing_symbol=name)
            )
            _add_files(reply, files)
        missing = _missing_dependencies(files)
        while missing:
            for dep in missing:
                reply = await _exchange(
                    call, reflection_pb2.ServerReflectionRequest(file_by_filename=dep)
                )
                _add_files(reply, files)
            missing = _missing_dependencies(files)
        await call.done_writing()
    finally:
        call.cancel()
    digest = hashlib.sha256()
    for fname in sorted(files):
        digest.update(files[fname].SerializeToString(deterministic=True))
    return BackendSchema(
        backend=backend,
        services=tuple(names),
        pool=_build_pool(files),
        fingerprint=digest.hexdigest()[:16],
    )


def _missing_dependencies(files: dict[str, descriptor_pb2.FileDescriptorProto]) -> list[str]:
    return sorted({dep for f in files.values() for dep in f.dependency if dep not in files})


class SchemaCache:
    """One `BackendSchema` per backend, loaded on first use, dropped by `invalidate`.

    Concurrent first uses share one load. A load tries each endpoint (healthy ones first).
    """

    def __init__(self, pool: BackendPool) -> None:
        self._pool = pool
        self._schemas: dict[str, BackendSchema] = {}
        self._fingerprints: dict[str, str] = {}
        self._loading: dict[str, asyncio.Future[BackendSchema]] = {}
        self._loaded_at: dict[str, float] = {}
        self.loads = 0
        self.invalidations = 0

    def cached(self, backend: str) -> BackendSchema | None:
        return self._schemas.get(backend)

    def age(self, backend: str) -> float:
        """Seconds since `backend`'s schema was loaded (infinite when it is not cached)."""
        loaded = self._loaded_at.get(backend)
        return float("inf") if loaded is None else time.monotonic() - loaded

    def invalidate(self, backend: str, reason: str) -> None:
        """Forget `backend`'s schema; the next use reloads it."""
        if self._schemas.pop(backend, None) is not None:
            self.invalidations += 1
            log.info("reflection cache of %s invalidated: %s", backend, reason)

    async def get(self, backend: Backend) -> BackendSchema:
        """The schema of `backend`, loading it if needed.

        Raises:
            RpcError: UNAVAILABLE when no endpoint answers reflection.
        """
        found = self._schemas.get(backend.name)
        if found is not None:
            return found
        pending = self._loading.get(backend.name)
        if pending is None:
            pending = asyncio.ensure_future(self._load(backend))
            self._loading[backend.name] = pending
            pending.add_done_callback(lambda _: self._loading.pop(backend.name, None))
        return await asyncio.shield(pending)

    async def _load(self, backend: Backend) -> BackendSchema:
        errors: list[str] = []
        endpoints = sorted(backend.endpoints, key=lambda ep: not ep.healthy)
        for ep in endpoints:
            try:
                schema = await fetch_schema(backend.name, ep.channel)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{ep.address}: {exc.code().name} {exc.details()}")
                continue
            self.loads += 1
            previous = self._fingerprints.get(backend.name)
            if previous is not None and previous != schema.fingerprint:
                log.warning(
                    "schema of %s changed (%s -> %s)", backend.name, previous, schema.fingerprint
                )
            self._fingerprints[backend.name] = schema.fingerprint
            self._schemas[backend.name] = schema
            self._loaded_at[backend.name] = time.monotonic()
            return schema
        raise RpcError(
            grpc.StatusCode.UNAVAILABLE,
            f"backend {backend.name!r} does not answer reflection ({'; '.join(errors)})",
        )

    def names(self) -> Iterable[str]:
        return tuple(self._schemas)
