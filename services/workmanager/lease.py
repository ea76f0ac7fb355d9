"""The recovery leader lease: one replica recovers workers, the others leave them alone.

A compare-and-swap lease at ``workmanager.recovery.leader`` (`statekeys.WORKER_RECOVERY_LEADER`)
holding ``{"holder", "expires_at"}``. A replica takes it when it is absent, expired, or already
its own (a restarted replica keeps its id: ``VIRTUFIN_REPLICA_ID``, default
``<hostname>:<grpc port>``), always with the etag it read, so two replicas racing for it cannot
both win. The lease lasts ``WORKER_RECOVERY_LEASE_TTL_SECONDS`` (default 300) and is released on
graceful shutdown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from virtufin import statekeys
from virtufin.envelope import format_time, parse_time
from virtufin.errors import ConcurrencyError, EnvelopeError
from virtufin.state.port import StateStore

__all__ = ["DEFAULT_LEASE_TTL_SECONDS", "RecoveryLease"]

DEFAULT_LEASE_TTL_SECONDS: Final = 300.0
log = logging.getLogger(__name__)


class RecoveryLease:
    """CAS lease with a TTL.

    Args:
        store: the shared state store.
        holder: this replica's id.
        ttl_seconds: how long a taken lease lasts.
        clock: wall-clock seconds (injectable).
    """

    def __init__(
        self,
        store: StateStore,
        *,
        holder: str,
        ttl_seconds: float = DEFAULT_LEASE_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.holder = holder
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def _value(self) -> dict[str, Any]:
        expires = datetime.fromtimestamp(self._clock() + self.ttl_seconds, UTC)
        return {"holder": self.holder, "expires_at": format_time(expires)}

    def _expired(self, value: Any) -> bool:
        try:
            expires = parse_time(str(value.get("expires_at")), field_name="expires_at")
        except (EnvelopeError, AttributeError):
            return True
        return expires.timestamp() <= self._clock()

    async def acquire(self, *, force: bool = False) -> bool:
        """Take (or renew) the lease; False when another live holder has it."""
        key = statekeys.WORKER_RECOVERY_LEADER
        item = await self._store.get(key)
        try:
            if item is None:
                await self._store.save(key, self._value(), first_write=True)
                return True
            value = item.value if isinstance(item.value, dict) else {}
            mine = value.get("holder") == self.holder
            if not (mine or force or self._expired(value)):
                log.info(
                    "recovery lease held by %s until %s",
                    value.get("holder"),
                    value.get("expires_at"),
                )
                return False
            await self._store.save(key, self._value(), etag=item.etag)
            return True
        except ConcurrencyError:
            log.info("lost the race for the recovery lease")
            return False

    async def release(self) -> None:
        """Give the lease up if this replica holds it (graceful shutdown)."""
        item = await self._store.get(statekeys.WORKER_RECOVERY_LEADER)
        if item is None or not isinstance(item.value, dict):
            return
        if item.value.get("holder") != self.holder:
            return
        try:
            await self._store.delete(statekeys.WORKER_RECOVERY_LEADER, etag=item.etag)
        except ConcurrencyError:
            return
