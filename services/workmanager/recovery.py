"""Recovery: after a restart, the lease holder brings back every worker meant to run.

Runs once at start-up (``WORKER_RECOVERY_ON_START``, default on) while health says
NOT_SERVING, and on ``RecoverWorkers``. Only the replica holding the `RecoveryLease` recovers;
it becomes the host of each recovered worker (replicas running one let it go when they see the
record change), so two replicas starting together never both start a worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from services.workmanager.host import WorkerHost
from services.workmanager.lease import RecoveryLease
from services.workmanager.records import WorkerRecord, WorkerRecords
from virtufin.proto import ensure_built

ensure_built()
from virtufin.proto.gen import workmanager_pb2  # noqa: E402

__all__ = ["Recovery", "RecoveryOutcome"]

log = logging.getLogger(__name__)
_RUNNING: Final = workmanager_pb2.WORKER_STATUS_RUNNING


@dataclass(frozen=True, slots=True)
class RecoveryOutcome:
    """Whether this replica led, and which workers came back or failed."""

    leader: bool
    recovered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Recovery:
    """Lease-guarded recovery of running workers onto this replica."""

    def __init__(self, host: WorkerHost, records: WorkerRecords, lease: RecoveryLease) -> None:
        self._host = host
        self._records = records
        self._lease = lease
        self.last: RecoveryOutcome | None = None

    async def run(self, *, force: bool = False) -> RecoveryOutcome:
        """Recover if the lease is ours (or `force`); otherwise report ``leader=False``."""
        if not await self._lease.acquire(force=force):
            self.last = RecoveryOutcome(leader=False)
            return self.last
        recovered: list[str] = []
        failed: list[str] = []
        for record in await self._records.all():
            if record.info.status != _RUNNING:
                continue

            def adopt(r: WorkerRecord) -> None:
                r.host = self._host.replica

            try:
                mine = await self._records.update(record.id, adopt)
                await self._host.ensure(mine.id, mine)
            except Exception as exc:
                log.warning("could not recover worker %s: %s", record.id, exc)
                await self._host.mark_failed(record.id, f"recovery failed: {exc}")
                failed.append(record.id)
                continue
            recovered.append(record.id)
        log.info("recovery done", extra={"recovered": recovered, "failed": failed, "leader": True})
        self.last = RecoveryOutcome(leader=True, recovered=recovered, failed=failed)
        return self.last
