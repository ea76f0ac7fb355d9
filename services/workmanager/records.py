"""Worker records in the state store: the desired state every replica converges to.

One record per worker at ``workmanager.worker.<id>`` (`statekeys.worker`), listed in
``workmanager.worker.index`` (`statekeys.WORKER_INDEX`); every write is a compare-and-swap on
the etag. A record holds the `WorkerInfo` as proto3 JSON (with the code source, so inline code
survives restarts), the code history, and ``host``: the replica that runs the worker. Writes go
through an `ObservedStateStore`, so each one is announced on ``state-changes``, which is how
the other replicas learn about it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from google.protobuf import json_format

from services.bootstrap.errors import RpcError
from virtufin import statekeys
from virtufin.errors import ConcurrencyError, StateError
from virtufin.proto import ensure_built
from virtufin.state.port import StateStore

ensure_built()
from virtufin.proto.gen import workmanager_pb2  # noqa: E402

__all__ = ["RECORD_KEY_PREFIX", "WorkerRecord", "WorkerRecords"]

RECORD_KEY_PREFIX: Final = statekeys.worker("")
_CAS_RETRIES: Final = 50


@dataclass
class WorkerRecord:
    """One persisted worker."""

    info: workmanager_pb2.WorkerInfo
    history: list[workmanager_pb2.WorkerHistoryEntry] = field(default_factory=list)
    host: str = ""
    etag: str | None = None

    @property
    def id(self) -> str:
        return str(self.info.id)

    def to_json(self) -> dict[str, Any]:
        return {
            "worker": json_format.MessageToDict(self.info, preserving_proto_field_name=True),
            "history": [
                json_format.MessageToDict(h, preserving_proto_field_name=True) for h in self.history
            ],
            "host": self.host,
        }

    @classmethod
    def from_json(cls, value: Any, *, etag: str | None = None) -> WorkerRecord:
        """Parse a stored record.

        Raises:
            StateError: the stored value is not a worker record.
        """
        if not isinstance(value, dict) or not isinstance(value.get("worker"), dict):
            raise StateError(statekeys.worker("?"), "stored worker record is corrupt")
        try:
            info = json_format.ParseDict(value["worker"], workmanager_pb2.WorkerInfo())
            history = [
                json_format.ParseDict(h, workmanager_pb2.WorkerHistoryEntry())
                for h in value.get("history", [])
            ]
        except json_format.ParseError as exc:
            raise StateError(
                statekeys.worker("?"), f"stored worker record is corrupt: {exc}"
            ) from None
        return cls(info=info, history=history, host=str(value.get("host", "")), etag=etag)


class WorkerRecords:
    """Read and compare-and-swap worker records and their index.

    Args:
        store: where records live (an `ObservedStateStore` announcing each write).
    """

    def __init__(self, store: StateStore) -> None:
        self._store = store

    async def get(self, worker_id: str) -> WorkerRecord | None:
        item = await self._store.get(statekeys.worker(worker_id))
        if item is None:
            return None
        return WorkerRecord.from_json(item.value, etag=item.etag)

    async def ids(self) -> list[str]:
        item = await self._store.get(statekeys.WORKER_INDEX)
        return [str(i) for i in item.value] if item is not None else []

    async def all(self) -> list[WorkerRecord]:
        """Every record, in index order (records missing from the store are skipped)."""
        ids = await self.ids()
        items = await self._store.get_bulk([statekeys.worker(i) for i in ids])
        out = []
        for worker_id in ids:
            item = items.get(statekeys.worker(worker_id))
            if item is not None:
                out.append(WorkerRecord.from_json(item.value, etag=item.etag))
        return out

    async def _update_index(self, change: Callable[[list[str]], list[str]]) -> None:
        for _ in range(_CAS_RETRIES):
            item = await self._store.get(statekeys.WORKER_INDEX)
            ids = [str(i) for i in item.value] if item is not None else []
            new = change(ids)
            if item is not None and new == ids:
                return
            try:
                if item is None:
                    await self._store.save(statekeys.WORKER_INDEX, new, first_write=True)
                else:
                    await self._store.save(statekeys.WORKER_INDEX, new, etag=item.etag)
                return
            except ConcurrencyError:
                continue
        raise RpcError(grpc.StatusCode.ABORTED, "the worker index is too contended; try again")

    async def create(self, record: WorkerRecord) -> WorkerRecord:
        """Store a new record and index it.

        Raises:
            RpcError: ALREADY_EXISTS when the id is taken.
        """
        key = statekeys.worker(record.id)
        try:
            record.etag = await self._store.save(key, record.to_json(), first_write=True)
        except ConcurrencyError:
            raise RpcError(
                grpc.StatusCode.ALREADY_EXISTS, f"worker {record.id!r} already exists"
            ) from None
        await self._update_index(lambda ids: ids if record.id in ids else [*ids, record.id])
        return record

    async def update(self, worker_id: str, change: Callable[[WorkerRecord], None]) -> WorkerRecord:
        """Apply `change` to the stored record and save it (retried on etag conflicts).

        Raises:
            RpcError: NOT_FOUND when there is no such worker.
        """
        for _ in range(_CAS_RETRIES):
            record = await self.get(worker_id)
            if record is None:
                raise RpcError(grpc.StatusCode.NOT_FOUND, f"no worker {worker_id!r}")
            change(record)
            try:
                record.etag = await self._store.save(
                    statekeys.worker(worker_id), record.to_json(), etag=record.etag
                )
            except ConcurrencyError:
                continue
            return record
        raise RpcError(grpc.StatusCode.ABORTED, f"worker {worker_id!r} is too contended")

    async def delete_snapshot(self, worker_id: str) -> None:
        """Remove the worker's state snapshot (``workmanager.snapshot.<id>``), if any."""
        await self._store.delete(statekeys.worker_snapshot(worker_id))

    async def delete(self, worker_id: str) -> bool:
        """Remove the record and its index entry; False when it did not exist."""
        existed = await self._store.get(statekeys.worker(worker_id)) is not None
        await self._store.delete(statekeys.worker(worker_id))
        await self._update_index(lambda ids: [i for i in ids if i != worker_id])
        return existed
