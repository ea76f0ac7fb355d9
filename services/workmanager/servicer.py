"""The ``virtufin.WorkManager`` RPCs over the shared records and this replica's `WorkerHost`.

Every change is written to the worker's record first (compare-and-swap), then applied: here
when this replica runs the worker, elsewhere by the replica that does (it hears the write on
``state-changes``). ``CreateWorker`` and ``StartWorker`` make the receiving replica the host;
``ListWorkers`` and the getters read the records, so every replica answers alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Final

import grpc

from services.bootstrap.errors import RpcError
from services.workmanager.code import resolve_code
from services.workmanager.host import TOPIC_SEPARATOR, WorkerHost
from services.workmanager.records import WorkerRecord, WorkerRecords
from services.workmanager.recovery import Recovery
from virtufin.errors import TopicError, WorkerError
from virtufin.lanes import is_valid_id, validate_pattern
from virtufin.proto import ensure_built
from virtufin.runtime.constants import MIME_NATIVE
from virtufin.runtime.lifecycle import check_env, check_tags

ensure_built()
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

from virtufin.proto.gen import workmanager_pb2, workmanager_pb2_grpc  # noqa: E402

__all__ = ["WORKER_ID_PATTERN", "WorkManagerServicer"]

WORKER_ID_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_RUNNING: Final = workmanager_pb2.WORKER_STATUS_RUNNING
_STOPPED: Final = workmanager_pb2.WORKER_STATUS_STOPPED


def _invalid(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


def _worker_id(raw: str) -> str:
    worker_id = raw.strip()
    if not worker_id:
        raise _invalid("id is required")
    if not WORKER_ID_PATTERN.match(worker_id):
        raise _invalid(f"worker id {worker_id[:80]!r} must match {WORKER_ID_PATTERN.pattern}")
    return worker_id


def _checked_pairs(worker_id: str, env: Mapping[str, str], tags: Mapping[str, str]) -> None:
    try:
        check_env(worker_id, env)
        check_tags(worker_id, tags)
    except WorkerError as exc:
        raise _invalid(exc.reason) from None


class WorkManagerServicer(workmanager_pb2_grpc.WorkManagerServicer):  # type: ignore[misc]
    """Implements ``virtufin.WorkManager``.

    Args:
        host: this replica's workers.
        records: the shared records.
        recovery: the lease-guarded recovery.
        library_version: prefix of derived version labels (``<v>-sha.<8 hex>``).
    """

    def __init__(
        self,
        *,
        host: WorkerHost,
        records: WorkerRecords,
        recovery: Recovery,
        library_version: str,
    ) -> None:
        self._host = host
        self._records = records
        self._recovery = recovery
        self._library_version = library_version

    def _label(self, requested: str, sha256: str) -> str:
        return requested.strip() or f"{self._library_version}-sha.{sha256[:8]}"

    async def _record(self, worker_id: str) -> WorkerRecord:
        record = await self._records.get(_worker_id(worker_id))
        if record is None:
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"no worker {worker_id!r}")
        return record

    async def _change(self, worker_id: str, change: Callable[[WorkerRecord], None]) -> WorkerRecord:
        record = await self._records.update(_worker_id(worker_id), change)
        await self._host.ensure(record.id, record)
        return record

    # ------------------------------------------------------------------ lifecycle

    async def CreateWorker(
        self, request: workmanager_pb2.CreateWorkerRequest, context: grpc.aio.ServicerContext
    ) -> workmanager_pb2.CreateWorkerResponse:
        worker_id = _worker_id(request.id or f"w-{uuid.uuid4().hex[:10]}")
        if request.topic:
            for pattern in request.topic.split(TOPIC_SEPARATOR):
                try:
                    validate_pattern(pattern.strip())
                except TopicError as exc:
                    raise _invalid(f"topic: {exc.reason}") from None
        if request.scenario_id and not is_valid_id(request.scenario_id):
            raise _invalid(f"scenario_id {request.scenario_id!r} must match ^[A-Z0-9_]{{1,32}}$")
        if request.parameters_json:
            try:
                params = json.loads(request.parameters_json)
            except json.JSONDecodeError as exc:
                raise _invalid(f"parameters_json is not JSON ({exc.msg})") from None
            if not isinstance(params, dict):
                raise _invalid("parameters_json must be a JSON object")
        if await self._records.get(worker_id) is not None:
            raise RpcError(grpc.StatusCode.ALREADY_EXISTS, f"worker {worker_id!r} already exists")
        resolved = await asyncio.to_thread(
            resolve_code, worker_id, request.code_source, request.mime_type, self._host.policy
        )
        manifest = resolved.manifest
        topic = request.topic or TOPIC_SEPARATOR.join(manifest.topics)
        if not topic:
            raise _invalid("topic is required (the code's manifest names none)")
        tags = {**manifest.tags, **request.tags}
        _checked_pairs(worker_id, request.env, tags)
        info = workmanager_pb2.WorkerInfo(
            id=worker_id,
            code_source=request.code_source,
            mime_type=manifest.mime_type,
            language=request.language or ("c" if manifest.mime_type == MIME_NATIVE else "python"),
            topic=topic,
            group=request.group or manifest.group or worker_id,
            created_at=_now(),
            status=_RUNNING if request.start else _STOPPED,
            env=dict(request.env),
            tags=tags,
            version=self._label(request.version, resolved.sha256),
            parameters_json=request.parameters_json,
            scenario_id=request.scenario_id,
        )
        entry = workmanager_pb2.WorkerHistoryEntry(
            version=info.version,
            loaded_at=info.created_at,
            sha256=resolved.sha256,
            mime_type=info.mime_type,
            url=resolved.url,
        )
        record = await self._records.create(
            WorkerRecord(info=info, history=[entry], host=self._host.replica)
        )
        # A worker that fails to start is FAILED with the reason; CreateWorker itself succeeded.
        with contextlib.suppress(WorkerError):
            await self._host.ensure(worker_id, record)
        fresh = await self._records.get(worker_id)
        return workmanager_pb2.CreateWorkerResponse(worker=self._host.view(fresh or record))

    async def ListWorkers(
        self, request: workmanager_pb2.ListWorkersRequest, context: grpc.aio.ServicerContext
    ) -> workmanager_pb2.ListWorkersResponse:
        out = []
        for record in await self._records.all():
            info = self._host.view(record)
            if request.status and info.status != request.status:
                continue
            if request.scenario_id and info.scenario_id != request.scenario_id:
                continue
            if any(info.tags.get(k) != v for k, v in request.tags.items()):
                continue
            out.append(info)
        return workmanager_pb2.ListWorkersResponse(workers=out)

    async def DeleteWorker(
        self, request: workmanager_pb2.DeleteWorkerRequest, context: grpc.aio.ServicerContext
    ) -> workmanager_pb2.DeleteWorkerResponse:
        worker_id = _worker_id(request.id)
        deleted = await self._records.delete(worker_id)
        await self._host.ensure(worker_id, None)
        # After the local stop, so that no last event writes it back; a new worker by this id
        # starts afresh. A replica running it deletes it again after its own stop (`ensure`).
        await self._records.delete_snapshot(worker_id)
        return workmanager_pb2.DeleteWorkerResponse(deleted=deleted)

    async def StartWorker(
        self, request: workmanager_pb2.StartWorkerRequest, context: grpc.aio.ServicerContext
    ) -> workmanager_pb2.StartWorkerResponse:
        def start_here(record: WorkerRecord) -> None:
            record.info.status = _RUNNING
            record.info.last_error = ""
            record.host = self._host.replica

        record = await self._change(request.id, start_here)
        return workmanager_pb2.StartWorkerResponse(worker=self._host.view(record))

    async def StopWorker(
        self, request: workmanager_pb2.StopWorkerRequest, context: grpc.aio.ServicerContext
    ) -> workmanager_pb2.StopWorkerResponse:
        def stop(record: WorkerRecord) -> None:
            record.info.status = _STOPPED

        record = await self._change(request.id, stop)
        return workmanager_pb2.StopWorkerResponse(worker=self._host.view(record))

    async def RecoverWorkers(
        self, request: workmanager_pb2.RecoverWorkersRequest, context: grpc.aio.ServicerContext
    ) -> workmanager_pb2.RecoverWorkersResponse:
        outcome = await self._recovery.run(force=request.force)
        return workmanager_pb2.RecoverWorkersResponse(
            leader=outcome.leader, recovered=outcome.recovered, failed=outcome.failed
        )

    async def GetWorkerHistory(
        self, request: workmanager_pb2.GetWorkerHistoryRequest, context: grpc.aio.ServicerContext
    ) -> workmanager_pb2.GetWorkerHistoryResponse:
        record = await self._record(request.id)
        return workmanager_pb2.GetWorkerHistoryResponse(entries=list(reversed(record.history)))

    async def LoadCode(
        self, request: workmanager_pb2.LoadCodeRequest, context: grpc.aio.ServicerContext
    ) -> workmanager_pb2.LoadCodeResponse:
        current = await self._record(request.id)
        mime = request.mime_type or current.info.mime_type
        resolved = await asyncio.to_thread(
            resolve_code, current.id, request.code_source, mime, self._host.policy
        )
        entry = workmanager_pb2.WorkerHistoryEntry(
            version=self._label(request.version, resolved.sha256),
            loaded_at=_now(),
            sha256=resolved.sha256,
            mime_type=mime,
            url=resolved.url,
        )
        if any(h.version == entry.version for h in current.history) and not request.version:
            entry.version = f"{entry.version}.{len(current.history) + 1}"

        if current.host == self._host.replica:
            # Load it here first: if the new code does not load, nothing changes.
            await self._host.preload(
                current.id, resolved.manifest.entry_point, entry.version, mime_type=mime
            )

        def reload(record: WorkerRecord) -> None:
            record.info.code_source.CopyFrom(request.code_source)
            record.info.mime_type = mime
            record.info.version = entry.version
            record.history.append(entry)

        record = await self._change(current.id, reload)
        return workmanager_pb2.LoadCodeResponse(worker=self._host.view(record), entry=entry)

    # ------------------------------------------------------------------ env and tags

    async def _set_pairs(
        self, worker_id: str, pairs: Mapping[str, str], *, replace: bool, tags: bool
    ) -> dict[str, str]:
        def change(record: WorkerRecord) -> None:
            target = record.info.tags if tags else record.info.env
            merged = dict(pairs) if replace else {**target, **pairs}
            if tags:
                _checked_pairs(record.id, record.info.env, merged)
            else:
                _checked_pairs(record.id, merged, record.info.tags)
            target.clear()
            target.update(merged)

        record = await self._change(worker_id, change)
        return dict(record.info.tags if tags else record.info.env)

    async def SetEnvironmentVariable(
        self,
        request: workmanager_pb2.SetEnvironmentVariableRequest,
        context: grpc.aio.ServicerContext,
    ) -> workmanager_pb2.SetEnvironmentVariableResponse:
        env = await self._set_pairs(
            request.id, {request.key: request.value}, replace=False, tags=False
        )
        return workmanager_pb2.SetEnvironmentVariableResponse(env=env)

    async def SetEnvironmentVariables(
        self,
        request: workmanager_pb2.SetEnvironmentVariablesRequest,
        context: grpc.aio.ServicerContext,
    ) -> workmanager_pb2.SetEnvironmentVariablesResponse:
        env = await self._set_pairs(request.id, request.env, replace=request.replace, tags=False)
        return workmanager_pb2.SetEnvironmentVariablesResponse(env=env)

    async def GetEnvironmentVariables(
        self,
        request: workmanager_pb2.GetEnvironmentVariablesRequest,
        context: grpc.aio.ServicerContext,
    ) -> workmanager_pb2.GetEnvironmentVariablesResponse:
        record = await self._record(request.id)
        return workmanager_pb2.GetEnvironmentVariablesResponse(env=dict(record.info.env))

    async def SetTag(
        self, request: workmanager_pb2.SetTagRequest, context: grpc.aio.ServicerContext
    ) -> workmanager_pb2.SetTagResponse:
        tags = await self._set_pairs(
            request.id, {request.key: request.value}, replace=False, tags=True
        )
        return workmanager_pb2.SetTagResponse(tags=tags)

    async def SetTags(
        self, request: workmanager_pb2.SetTagsRequest, context: grpc.aio.ServicerContext
    ) -> workmanager_pb2.SetTagsResponse:
        tags = await self._set_pairs(request.id, request.tags, replace=request.replace, tags=True)
        return workmanager_pb2.SetTagsResponse(tags=tags)

    async def GetTags(
        self, request: workmanager_pb2.GetTagsRequest, context: grpc.aio.ServicerContext
    ) -> workmanager_pb2.GetTagsResponse:
        record = await self._record(request.id)
        return workmanager_pb2.GetTagsResponse(tags=dict(record.info.tags))
