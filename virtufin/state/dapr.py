"""The Dapr adapter of the state port: the SDK's state API with etags, plus a key index.

Why it is built the way it is:

- **Values** are JSON bytes; etags are the component's. A write with an etag sends it with
  ``StateOptions(concurrency=FIRST_WRITE, consistency=STRONG)``; ``first_write`` sends
  FIRST_WRITE without an etag, which Dapr refuses for an existing key. ABORTED, and daprd's
  "etag mismatch" errors (its transactions report them as INTERNAL), become `ConcurrencyError`.
- **Keys**: Dapr cannot list keys (its query API is alpha and most stores lack it), so
  `keys(prefix)` reads an index kept under the reserved key ``__virtufin.keys__``: a sorted
  JSON list of every key. Whatever changes the set of keys (a new key, a delete, a
  transaction) runs as one ``ExecuteStateTransaction`` together with the new index, guarded
  by the index's etag, so the two cannot disagree; a lost race on the index is retried. An
  update of a key the index already lists is a plain ``SaveState``, so writers of existing
  keys never contend on the index.
- **The etag a save returns** is read back: Dapr's SaveState does not return it. If the value
  read is not the one written, a later writer already won; the save still succeeded, and
  returns an etag that matches nothing, so a compare-and-swap based on it fails as it should.
  The same read-back sees whether a delete raced the save and unlisted the key, and lists it
  again (rewriting the value with its etag, so a later change of the key wins over that).
- **Limits**: the index is one value, rewritten on every creation or deletion (O(keys)),
  and those writes take turns on its etag: fine for registries, orders and positions of one
  venue, not for millions of short-lived keys. Keys written around this adapter (another
  Dapr client) are not listed. ``first_write`` also checks the key itself, so such keys are
  not overwritten by it.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

import grpc
from dapr.aio.clients import DaprClient
from dapr.aio.clients.health import DaprHealth
from dapr.clients.exceptions import DaprInternalError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, Consistency, StateOptions

from virtufin.errors import ConcurrencyError, StateError
from virtufin.state._codec import dumps
from virtufin.state.port import StateItem, StateOp, StateStore

__all__ = ["INDEX_KEY", "DaprStateStore"]

INDEX_KEY: Final = "__virtufin.keys__"
"""The reserved key holding the sorted JSON list of every other key."""
_MAX_ATTEMPTS: Final = 64
_MISMATCH: Final = "etag mismatch"


def _encode(key: str, value: Any) -> bytes:
    return dumps(key, value).encode()


def _is_conflict(exc: BaseException) -> bool:
    """Whether daprd's error says an etag did not match (or a first write found the key)."""
    if isinstance(exc, grpc.RpcError):
        return bool(exc.code() == grpc.StatusCode.ABORTED or _MISMATCH in (exc.details() or ""))
    return _MISMATCH in str(exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.RpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)  # save_state's DaprInternalError keeps only the details


def _upsert(key: str, body: bytes, etag: str | None) -> Any:
    return TransactionalStateOperation(key=key, data=body, etag=etag)


def _superseded() -> str:
    """An etag no stored value has: a later writer replaced the value just saved."""
    return f"superseded-{uuid.uuid4().hex}"


class DaprStateStore(StateStore):
    """Dapr adapter of the state port (see the module docstring for the design).

    Args:
        store_name: the Dapr state store component (``settings.state_store_name``).
        dapr_address: the sidecar's gRPC address; default: the SDK's settings
            (``DAPR_GRPC_ENDPOINT``, else ``DAPR_RUNTIME_HOST``:``DAPR_GRPC_PORT``).

    Example:
        >>> async with DaprStateStore(store_name="statestore") as store:  # doctest: +SKIP
        ...     etag = await store.save("scenario.S1", {"status": "active"})
    """

    name = "dapr"

    def __init__(self, *, store_name: str, dapr_address: str | None = None) -> None:
        self.store_name = store_name
        self.dapr_address = dapr_address
        self._client: Any = None
        self._open_lock = asyncio.Lock()

    # ---------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        """Wait for the sidecar's health endpoint, then connect (idempotent; done lazily).

        Raises:
            StateError: the sidecar did not become healthy within ``DAPR_HEALTH_TIMEOUT``.
        """
        if self._client is not None:
            return
        async with self._open_lock:
            if self._client is not None:
                return
            try:
                await DaprHealth.wait_for_sidecar()
                # The constructor repeats the health check, blocking: instant now.
                self._client = DaprClient(address=self.dapr_address)
            except Exception as exc:
                raise StateError("", f"cannot reach the Dapr sidecar: {exc}") from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _ready(self) -> Any:
        await self.open()
        return self._client

    # ---------------------------------------------------------------- reads

    async def get(self, key: str) -> StateItem | None:
        self._check_key(key)
        return await self._get(key)

    async def get_bulk(self, keys: Sequence[str]) -> dict[str, StateItem]:
        unique = list(dict.fromkeys(keys))
        for key in unique:
            self._check_key(key)
        return await self._get_many(unique)

    async def keys(self, prefix: str = "") -> list[str]:
        index, _ = await self._index()
        return sorted(key for key in index if key.startswith(prefix))

    async def _get(self, key: str) -> StateItem | None:
        client = await self._ready()
        try:
            response = await client.get_state(store_name=self.store_name, key=key)
        except grpc.RpcError as exc:
            raise StateError(key, f"reading through Dapr failed: {_describe(exc)}") from None
        return self._item(key, response.data, response.etag)

    async def _get_many(self, keys: Sequence[str]) -> dict[str, StateItem]:
        if not keys:
            return {}
        client = await self._ready()
        try:
            response = await client.get_bulk_state(store_name=self.store_name, keys=list(keys))
        except grpc.RpcError as exc:
            raise StateError(keys[0], f"reading through Dapr failed: {_describe(exc)}") from None
        found: dict[str, StateItem] = {}
        for entry in response.items:
            if entry.error:
                raise StateError(entry.key, f"Dapr could not read it: {entry.error}")
            item = self._item(entry.key, entry.data, entry.etag)
            if item is not None:
                found[entry.key] = item
        return found

    @staticmethod
    def _item(key: str, data: bytes | str, etag: str) -> StateItem | None:
        if not data:
            return None  # Dapr answers an absent key with empty data; we never store b""
        try:
            return StateItem(key, json.loads(data), etag)
        except ValueError:
            raise StateError(key, "the stored value is not JSON") from None

    # ---------------------------------------------------------------- writes

    async def save(
        self, key: str, value: Any, *, etag: str | None = None, first_write: bool = False
    ) -> str:
        self._check_key(key)
        if first_write and etag is not None:
            raise ConcurrencyError(key, etag)  # "must not exist" and "must be at etag"
        body = _encode(key, value)
        for attempt in range(_MAX_ATTEMPTS):
            index, index_etag = await self._index()
            if key in index:
                await self._save_listed(key, body, etag, first_write)
                return await self._settle(key, body)
            if first_write and await self._get(key) is not None:
                raise ConcurrencyError(key, None)  # a key written around the index
            ops = [_upsert(key, body, etag), self._index_op(index | {key}, index_etag)]
            if await self._commit(ops, [StateOp("save", key, None, etag)], first_write):
                return await self._settle(key, body)
            await self._pause(attempt)
        raise StateError(key, "the key index stayed contended; try again")

    async def delete(self, key: str, *, etag: str | None = None) -> None:
        self._check_key(key)
        for attempt in range(_MAX_ATTEMPTS):
            index, index_etag = await self._index()
            ops = [
                TransactionalStateOperation(
                    key=key, etag=etag, operation_type=TransactionOperationType.delete
                ),
                self._index_op(index - {key}, index_etag),
            ]
            if await self._commit(ops, [StateOp("delete", key, None, etag)]):
                return
            await self._pause(attempt)
        raise StateError(key, "the key index stayed contended; try again")

    async def transact(self, ops: Sequence[StateOp]) -> None:
        if not ops:
            return
        bodies: list[bytes | None] = []
        for op in ops:
            self._check_key(op.key)
            bodies.append(_encode(op.key, op.value) if op.op == "save" else None)
        for attempt in range(_MAX_ATTEMPTS):
            index, index_etag = await self._index()
            members = set(index)
            dapr_ops = []
            for op, body in zip(ops, bodies, strict=True):
                if body is not None:
                    members.add(op.key)
                    dapr_ops.append(_upsert(op.key, body, op.etag))
                else:
                    members.discard(op.key)
                    dapr_ops.append(
                        TransactionalStateOperation(
                            key=op.key, etag=op.etag, operation_type=TransactionOperationType.delete
                        )
                    )
            dapr_ops.append(self._index_op(members, index_etag))
            if await self._commit(dapr_ops, ops):
                return
            await self._pause(attempt)
        raise StateError(ops[0].key, "the key index stayed contended; try again")

    async def _save_listed(
        self, key: str, body: bytes, etag: str | None, first_write: bool
    ) -> None:
        """A plain SaveState of a key the index lists; Dapr checks etag and first write."""
        client = await self._ready()
        options = None
        if etag is not None or first_write:
            options = StateOptions(
                concurrency=Concurrency.first_write, consistency=Consistency.strong
            )
        try:
            await client.save_state(
                store_name=self.store_name, key=key, value=body, etag=etag, options=options
            )
        except (grpc.RpcError, DaprInternalError) as exc:  # save_state raises the latter
            if _is_conflict(exc):
                raise ConcurrencyError(key, etag) from None
            raise StateError(key, f"saving through Dapr failed: {_describe(exc)}") from None

    async def _settle(self, key: str, body: bytes) -> str:
        """The etag of what was just saved, listing the key again if a delete raced it."""
        expected = json.loads(body)
        for attempt in range(_MAX_ATTEMPTS):
            found = await self._get_many([key, INDEX_KEY])
            current = found.get(key)
            if current is None or current.value != expected:
                return _superseded()
            listing = found.get(INDEX_KEY)
            if listing is None:
                index, index_etag = await self._index()
            else:
                index, index_etag = self._parse_index(listing.value), listing.etag
            if key in index:
                return current.etag
            ops = [_upsert(key, body, current.etag), self._index_op(index | {key}, index_etag)]
            await self._commit(ops, [])  # on any conflict: look again
            await self._pause(attempt)
        raise StateError(key, "the key index stayed contended; try again")

    async def _commit(
        self, ops: list[Any], checks: Sequence[StateOp], first_write: bool = False
    ) -> bool:
        """Run one transaction. False: only the index moved (retry). Raises on a stale etag."""
        client = await self._ready()
        try:
            await client.execute_state_transaction(store_name=self.store_name, operations=ops)
            return True
        except grpc.RpcError as exc:
            if not _is_conflict(exc):
                raise StateError(
                    ops[0].key, f"the Dapr transaction failed: {_describe(exc)}"
                ) from None
        await self._raise_if_stale(checks, first_write)
        return False

    async def _raise_if_stale(self, checks: Sequence[StateOp], first_write: bool) -> None:
        """Find the operation whose etag (or first write) cannot succeed, and raise for it."""
        wanted = [op.key for op in checks if op.etag is not None or first_write]
        current = await self._get_many(list(dict.fromkeys(wanted)))
        touched: set[str] = set()
        for op in checks:
            if op.etag is not None:
                item = current.get(op.key)
                if op.key in touched or item is None or item.etag != op.etag:
                    raise ConcurrencyError(op.key, op.etag)
            elif first_write and op.key in current:
                raise ConcurrencyError(op.key, None)
            touched.add(op.key)

    # ---------------------------------------------------------------- the index

    async def _index(self) -> tuple[set[str], str]:
        """The listed keys and the index's etag, creating an empty index the first time."""
        client = await self._ready()
        for _ in range(3):
            item = await self._get(INDEX_KEY)
            if item is not None:
                return self._parse_index(item.value), item.etag
            try:
                await client.save_state(
                    store_name=self.store_name,
                    key=INDEX_KEY,
                    value=b"[]",
                    options=StateOptions(
                        concurrency=Concurrency.first_write, consistency=Consistency.strong
                    ),
                )
            except (grpc.RpcError, DaprInternalError) as exc:
                if not _is_conflict(exc):  # a conflict: another writer created it first
                    raise StateError(
                        INDEX_KEY, f"saving through Dapr failed: {_describe(exc)}"
                    ) from None
        raise StateError(INDEX_KEY, "the key index could not be created")

    @staticmethod
    def _parse_index(value: Any) -> set[str]:
        if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
            raise StateError(INDEX_KEY, "the key index is not a JSON list of strings")
        return set(value)

    @staticmethod
    def _index_op(keys: Iterable[str], etag: str) -> Any:
        return _upsert(INDEX_KEY, _encode(INDEX_KEY, sorted(keys)), etag)

    @staticmethod
    def _check_key(key: str) -> None:
        if key == INDEX_KEY:
            raise StateError(key, "is reserved for the Dapr adapter's key index")

    @staticmethod
    async def _pause(attempt: int) -> None:
        """A short random pause before retrying a lost race (jitter breaks lockstep)."""
        await asyncio.sleep(random.uniform(0, min(0.05, 0.0005 * 2**attempt)))
