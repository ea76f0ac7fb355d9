"""`WorkerHost`: this replica's share of the workers, converged to their stored records.

A record names the replica that runs its worker (``host``). `WorkerHost.ensure` makes the local
`Supervisor` agree with one record: create the worker if it is ours and missing, reload its code
when the record's version changed, apply env and tags, start or stop it as the record's status
says, and drop it when the record is gone or names another replica. The RPCs call it right after
their write; the other replicas call it when the write's ``state-changes`` event reaches them, so
a call landing on any replica reaches the worker wherever it runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Final

from services.workmanager.code import CodePolicy, resolve_code
from services.workmanager.records import WorkerRecord, WorkerRecords
from virtufin.errors import WorkerError, WorkerLoadError
from virtufin.proto import ensure_built
from virtufin.runtime.lifecycle import WorkerState
from virtufin.runtime.supervisor import Supervisor
from virtufin.runtime.supervisor import WorkerInfo as LocalInfo

ensure_built()
from virtufin.proto.gen import workmanager_pb2  # noqa: E402

__all__ = ["TOPIC_SEPARATOR", "WorkerHost", "local_status"]

log = logging.getLogger(__name__)
TOPIC_SEPARATOR: Final = ","
_RUNNING: Final = workmanager_pb2.WORKER_STATUS_RUNNING
_STOPPED: Final = workmanager_pb2.WORKER_STATUS_STOPPED
_FAILED: Final = workmanager_pb2.WORKER_STATUS_FAILED


def local_status(state: WorkerState) -> workmanager_pb2.WorkerStatus:
    """The proto `WorkerStatus` of a supervisor state."""
    if state is WorkerState.RUNNING:
        return _RUNNING
    if state is WorkerState.FAILED:
        return _FAILED
    return _STOPPED


class WorkerHost:
    """The workers this replica runs.

    Args:
        supervisor: the local runtime.
        records: the shared records.
        replica: this replica's id (the ``host`` its records carry).
        policy: where code may come from.
        gateway: answers native workers' ``gateway_call`` (None: "unavailable").
    """

    def __init__(
        self,
        supervisor: Supervisor,
        records: WorkerRecords,
        *,
        replica: str,
        policy: CodePolicy,
        gateway: Callable[[str, str, bytes], bytes] | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.records = records
        self.replica = replica
        self.policy = policy
        self.gateway = gateway
        self._locks: dict[str, asyncio.Lock] = {}
        self._versions: dict[str, str] = {}

    def lock(self, worker_id: str) -> asyncio.Lock:
        """The lock serialising every change to one worker on this replica."""
        return self._locks.setdefault(worker_id, asyncio.Lock())

    def local(self, worker_id: str) -> LocalInfo | None:
        try:
            return self.supervisor.info(worker_id)
        except WorkerError:
            return None

    def view(self, record: WorkerRecord) -> workmanager_pb2.WorkerInfo:
        """The record's `WorkerInfo`, with the live status when the worker runs here."""
        info = workmanager_pb2.WorkerInfo()
        info.CopyFrom(record.info)
        local = self.local(record.id) if record.host == self.replica else None
        if local is not None:
            info.status = local_status(local.state)
            if local.last_error:
                info.last_error = local.last_error
        return info

    async def _create(self, record: WorkerRecord) -> None:
        info = record.info
        resolved = await asyncio.to_thread(
            resolve_code, record.id, info.code_source, info.mime_type, self.policy
        )
        topics = tuple(t for t in info.topic.split(TOPIC_SEPARATOR) if t) or None
        params = json.loads(info.parameters_json) if info.parameters_json else {}
        await self.supervisor.create(
            resolved.manifest,
            params=params,
            topics=topics,
            group=info.group or None,
            env=dict(info.env),
            tags=dict(info.tags),
            scenario_id=info.scenario_id or None,
            gateway=self.gateway,
        )
        self._versions[record.id] = info.version

    async def _reload(self, record: WorkerRecord) -> None:
        info = record.info
        resolved = await asyncio.to_thread(
            resolve_code, record.id, info.code_source, info.mime_type, self.policy
        )
        await self.supervisor.load_code(record.id, entry_point=resolved.manifest.entry_point)
        self._versions[record.id] = info.version

    async def preload(
        self, worker_id: str, entry_point: str, version: str, *, mime_type: str
    ) -> None:
        """Hot-reload a local worker onto new code before its record changes.

        Raises:
            WorkerLoadError: the new code does not load (the old code keeps running).
        """
        async with self.lock(worker_id):
            local = self.local(worker_id)
            if local is None or local.mime_type != mime_type:
                return  # nothing to reload here, or a new engine that `ensure` builds
            await self.supervisor.load_code(worker_id, entry_point=entry_point)
            self._versions[worker_id] = version

    def _sync_pairs(self, worker_id: str, wanted: Mapping[str, str], *, tags: bool) -> None:
        current = self.supervisor.tags(worker_id) if tags else self.supervisor.env(worker_id)
        setter = self.supervisor.set_tag if tags else self.supervisor.set_env
        for key in current.keys() - wanted.keys():
            setter(worker_id, key, None)
        for key, value in wanted.items():
            if current.get(key) != value:
                setter(worker_id, key, value)

    async def drop(self, worker_id: str) -> None:
        """Forget a local worker (stopping it) without touching its record."""
        if self.local(worker_id) is not None:
            await self.supervisor.delete(worker_id)
        self._versions.pop(worker_id, None)

    async def ensure(self, worker_id: str, record: WorkerRecord | None) -> None:
        """Make the local runtime agree with `record` (None: the worker is gone; so is its
        snapshot once a worker that ran here is stopped).

        Raises:
            WorkerLoadError: the worker should run but cannot load (its record is marked
                FAILED first).
            RpcError: its code source is unusable.
        """
        async with self.lock(worker_id):
            if record is None or record.host != self.replica:
                ran_here = self.local(worker_id) is not None
                await self.drop(worker_id)
                if record is None and ran_here:
                    # Deleted: its snapshot goes once it is stopped here. The deleting replica
                    # removed it already, but an event handled before our stop wrote it back.
                    await self.records.delete_snapshot(worker_id)
                return
            local = self.local(worker_id)
            if local is not None and local.mime_type != record.info.mime_type:
                await self.drop(worker_id)  # another engine: build the worker anew
                local = None
            if local is None:
                await self._create(record)
                local = self.local(worker_id)
                assert local is not None
            elif self._versions.get(worker_id) != record.info.version:
                await self._reload(record)
            self._sync_pairs(worker_id, record.info.env, tags=False)
            self._sync_pairs(worker_id, record.info.tags, tags=True)
            desired = record.info.status
            if desired == _RUNNING and local.state is not WorkerState.RUNNING:
                try:
                    await self.supervisor.start(worker_id)
                except WorkerLoadError as exc:
                    await self.mark_failed(worker_id, exc.reason)
                    raise
            elif desired == _STOPPED and local.state in (WorkerState.RUNNING, WorkerState.FAILED):
                await self.supervisor.stop(worker_id)

    async def converge(self, worker_id: str) -> None:
        """`ensure` from the stored record; failures are logged (background use)."""
        try:
            await self.ensure(worker_id, await self.records.get(worker_id))
        except Exception as exc:
            log.warning("worker %s could not converge: %s", worker_id, exc)

    async def mark_failed(self, worker_id: str, reason: str) -> None:
        """Record that a worker we run failed (only if it is still meant to run here)."""

        def change(record: WorkerRecord) -> None:
            if record.host == self.replica and record.info.status == _RUNNING:
                record.info.status = _FAILED
                record.info.last_error = reason

        try:
            await self.records.update(worker_id, change)
        except Exception as exc:
            log.warning("could not record the failure of %s: %s", worker_id, exc)

    async def sync_failures(self) -> None:
        """Persist failures the supervisor noticed between calls (crashed, gave up)."""
        for local in self.supervisor.list_workers():
            if local.state is WorkerState.FAILED:
                record = await self.records.get(local.id)
                if record is not None and record.info.status == _RUNNING:
                    await self.mark_failed(local.id, local.last_error or "engine failed")
