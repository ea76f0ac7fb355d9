"""The ``virtufin.State`` service: JSON state with etags, per-service key registries.

Keys are stored as given (they are already namespaced by convention: ``workmanager.worker.<id>``,
``scenario.<id>``, …); ``service`` names the caller for the ``state-changes`` event and for its
registry of keys. A service's registered keys are its ``services.json`` ``state.keys``, plus every
key it saved, read or registered through this API, kept at ``gateway.keys.<service>`` so that they
outlive the gateway. ``GetAllState`` returns the registered keys (filtered by ``prefix``) and,
when a prefix is given, every stored key under it too: our stores can scan prefixes, which
Virtufin's Dapr stores could not.

Every save and delete goes through `ObservedStateStore`, which publishes
``{"service","key","action","value"?}`` on ``state-changes`` after the write committed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Final

import grpc

from services.bootstrap.errors import RpcError
from virtufin.bus.port import EventBus
from virtufin.config import ServicesConfig
from virtufin.errors import ConcurrencyError
from virtufin.proto import ensure_built
from virtufin.state.observed import ObservedStateStore
from virtufin.state.port import StateStore

ensure_built()
from virtufin.proto.gen import gateway_pb2, gateway_pb2_grpc  # noqa: E402

__all__ = ["KEY_REGISTRY_PREFIX", "StateServicer", "registry_key"]

KEY_REGISTRY_PREFIX: Final = "gateway.keys."
_SERVICE_RE: Final = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_KEY_MAX: Final = 1024
_CAS_RETRIES: Final = 20


def registry_key(service: str) -> str:
    """Where the gateway keeps `service`'s registered keys: ``gateway.keys.<service>``."""
    return KEY_REGISTRY_PREFIX + service


def _check_service(service: str) -> str:
    if not _SERVICE_RE.match(service):
        raise RpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"service {service!r} must be a services.json name (^[a-z][a-z0-9-]{{0,62}}$)",
        )
    return service


def _check_key(key: str) -> str:
    if not key or len(key) > _KEY_MAX or any(c.isspace() or ord(c) < 32 for c in key):
        raise RpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"key {key[:80]!r} must be 1-{_KEY_MAX} characters without whitespace",
        )
    return key


def _decode(key: str, raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RpcError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"value of {key!r} is not a UTF-8 JSON document ({exc})",
        ) from None


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class StateServicer(gateway_pb2_grpc.StateServicer):  # type: ignore[misc]
    """Implements ``virtufin.State`` over a `StateStore`, announcing writes on the bus.

    Args:
        store: the shared state store.
        bus: where ``state-changes`` events go.
        services: the catalogue (for each service's declared ``state.keys``).
    """

    def __init__(self, *, store: StateStore, bus: EventBus, services: ServicesConfig) -> None:
        self._store = store
        self._bus = bus
        self._declared = {svc.name: tuple(svc.state.keys) for svc in services.services}
        self._known: dict[str, set[str]] = {}

    def _observed(self, service: str, include_value: bool) -> ObservedStateStore:
        # The bus is the service's `TracedBus`: the event carries the request's traceparent.
        return ObservedStateStore(
            self._store, self._bus.publish, service=service, include_value=include_value
        )

    async def _registered(self, service: str) -> list[str]:
        item = await self._store.get(registry_key(service))
        stored = list(item.value) if item is not None and isinstance(item.value, list) else []
        return list(dict.fromkeys([*self._declared.get(service, ()), *stored]))

    async def _register(self, service: str, keys: Iterable[str]) -> int:
        """Add `keys` to the service's registry (CAS on its etag); how many were new."""
        declared = self._declared.get(service, ())
        known = self._known.get(service, set())
        wanted = [k for k in dict.fromkeys(keys) if k not in known and k not in declared]
        if not wanted:
            return 0
        rkey = registry_key(service)
        for _ in range(_CAS_RETRIES):
            item = await self._store.get(rkey)
            current: list[str] = list(item.value) if item is not None else []
            new = [k for k in wanted if k not in current]
            if not new:
                self._known.setdefault(service, set()).update(wanted)
                return 0
            try:
                if item is None:
                    await self._store.save(rkey, current + new, first_write=True)
                else:
                    await self._store.save(rkey, current + new, etag=item.etag)
            except ConcurrencyError:
                continue
            self._known.setdefault(service, set()).update(wanted)
            return len(new)
        raise RpcError(grpc.StatusCode.ABORTED, f"the key registry of {service!r} is too contended")

    async def SaveState(
        self, request: gateway_pb2.SaveStateRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.SaveStateResponse:
        service, key = _check_service(request.service), _check_key(request.key)
        value = _decode(key, request.value)
        store = self._observed(service, request.include_value)
        etag = await store.save(key, value, etag=request.etag or None)
        await self._register(service, [key])
        return gateway_pb2.SaveStateResponse(etag=etag)

    async def GetState(
        self, request: gateway_pb2.GetStateRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetStateResponse:
        service, key = _check_service(request.service), _check_key(request.key)
        item = await self._store.get(key)
        await self._register(service, [key])
        if item is None:
            return gateway_pb2.GetStateResponse(found=False)
        return gateway_pb2.GetStateResponse(value=_encode(item.value), etag=item.etag, found=True)

    async def GetAllState(
        self, request: gateway_pb2.GetAllStateRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetAllStateResponse:
        service = _check_service(request.service)
        prefix = request.prefix
        keys = [k for k in await self._registered(service) if k.startswith(prefix)]
        if prefix:
            keys = list(dict.fromkeys([*keys, *await self._store.keys(prefix)]))
        items = await self._store.get_bulk(sorted(keys))
        return gateway_pb2.GetAllStateResponse(
            items=[
                gateway_pb2.StateItem(key=k, value=_encode(i.value), etag=i.etag)
                for k, i in sorted(items.items())
            ]
        )

    async def RegisterKeys(
        self, request: gateway_pb2.RegisterKeysRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RegisterKeysResponse:
        service = _check_service(request.service)
        keys = [_check_key(k) for k in request.keys]
        return gateway_pb2.RegisterKeysResponse(registered=await self._register(service, keys))

    async def DeleteState(
        self, request: gateway_pb2.DeleteStateRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteStateResponse:
        service, key = _check_service(request.service), _check_key(request.key)
        existed = await self._store.get(key) is not None
        await self._observed(service, False).delete(key, etag=request.etag or None)
        return gateway_pb2.DeleteStateResponse(deleted=existed)
