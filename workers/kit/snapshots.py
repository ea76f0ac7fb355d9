"""Worker state snapshots in the state store: what lets a restarted worker resume.

One key per worker, ``workmanager.snapshot.<id>`` (`virtufin.statekeys.worker_snapshot`)::

    {"format": 1, "worker_id": "sma-live", "fingerprint": "…", "state": <snapshot()>,
     "applied": ["<source>|<id>", …], "changes": 41, "saved_at": "2024-05-01T12:00:00+00:00"}

When: after every input that changed the state (its JSON differs from the last one saved),
*after* that input's outputs were published and *before* the input is acknowledged. An input
that left the state as it was writes nothing. Not every N inputs: the bus forgets acknowledged
inputs, so a snapshot that lags behind could never be caught up by replaying them.

The watermark, `applied`, keeps the keys (``source|id``) of the last `remember` inputs that
changed the state. After a crash the broker redelivers what was not acknowledged:

- an input processed and saved but not acknowledged is in `applied`: the host skips it (its
  outputs went out before the save);
- an input processed but not saved is processed again on the restored state: the same state
  and the same outputs, with the same envelope and order ids (`workers.kit.ids`), which the bus
  and the venue drop as repeats.

Writes carry the etag of the last read or write (the first one is a ``first_write``); a
`ConcurrencyError` means another instance of the worker wrote meanwhile: the host reloads the
stored snapshot into the worker and lets the input be redelivered.

A snapshot is restored only into a worker with the same `fingerprint` (the worker's kind and
state version, and its parameters); otherwise the worker starts afresh and the next save
replaces it.

Example::

    keeper = SnapshotKeeper(store, "sma-live", fingerprint=fingerprint("SmaCross@1", params))
    restored = await keeper.load()          # None: nothing (usable) stored
    if restored is not None:
        worker.restore(restored.state)
    ...                                     # per input, after its outputs are published:
    if not keeper.applied(event):
        await keeper.record(event, worker.snapshot())
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from virtufin import statekeys
from virtufin.envelope import Envelope
from virtufin.errors import WorkerError
from virtufin.state.port import StateStore

__all__ = [
    "DEFAULT_REMEMBER",
    "SNAPSHOT_FORMAT",
    "Restored",
    "SnapshotKeeper",
    "fingerprint",
    "input_key",
]

SNAPSHOT_FORMAT: Final = 1
DEFAULT_REMEMBER: Final = 64
"""Input keys kept in `applied`: far more than a broker has unacknowledged for one worker."""
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False)


def fingerprint(kind: str, params: Mapping[str, Any]) -> str:
    """16 hex digits naming what a snapshot fits: the worker's kind (class name and state
    version) and its parameters."""
    material = json.dumps([kind, dict(params)], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:16]


def input_key(event: Envelope) -> str:
    """``<source>|<id>``: what identifies an input (as the bus de-duplicates it)."""
    return f"{event.source}|{event.id}"


@dataclass(frozen=True, slots=True)
class Restored:
    """A stored snapshot that fits the worker."""

    state: Any
    changes: int
    saved_at: str


class SnapshotKeeper:
    """Loads and saves one worker's snapshots, and remembers which inputs they include.

    Args:
        store: the state store.
        worker_id: the worker (the key is ``workmanager.snapshot.<id>``).
        fingerprint: what the snapshot must fit (`fingerprint`).
        remember: how many input keys the watermark keeps.
        logger: where to report discarded snapshots.
    """

    def __init__(
        self,
        store: StateStore,
        worker_id: str,
        *,
        fingerprint: str,
        remember: int = DEFAULT_REMEMBER,
        logger: logging.Logger | None = None,
    ) -> None:
        if remember < 1:
            raise ValueError("remember must be at least 1")
        self.store = store
        self.worker_id = worker_id
        self.key = statekeys.worker_snapshot(worker_id)
        self.fingerprint = fingerprint
        self.logger = logger or logging.getLogger(f"virtufin.worker.{worker_id}")
        self.saves = 0
        self._remember = remember
        self._applied: deque[str] = deque(maxlen=remember)
        self._applied_set: set[str] = set()
        self._etag: str | None = None
        self._text: str | None = None
        self._changes = 0
        self._pending: dict[str, Any] | None = None

    @property
    def dirty(self) -> bool:
        """A state is waiting to be saved (the last save failed)."""
        return self._pending is not None

    def _remember_input(self, key: str) -> None:
        if key in self._applied_set:
            return
        if len(self._applied) == self._remember:
            self._applied_set.discard(self._applied[0])
        self._applied.append(key)
        self._applied_set.add(key)

    async def load(self) -> Restored | None:
        """Read the stored snapshot and take its watermark and etag.

        Returns:
            The snapshot, or None when none is stored or it does not fit (logged).

        Raises:
            StateError: the store could not be read.
        """
        item = await self.store.get(self.key)
        self._applied.clear()
        self._applied_set.clear()
        self._text = None
        self._changes = 0
        self._pending = None
        self._etag = None if item is None else item.etag
        if item is None:
            return None
        value = item.value
        if not isinstance(value, Mapping) or value.get("format") != SNAPSHOT_FORMAT:
            self.logger.warning(
                "snapshot %s is not in format %d; ignored", self.key, SNAPSHOT_FORMAT
            )
            return None
        if value.get("fingerprint") != self.fingerprint:
            self.logger.warning(
                "snapshot %s was taken by other code or parameters (fingerprint %s, now %s); "
                "the worker starts afresh",
                self.key,
                value.get("fingerprint"),
                self.fingerprint,
            )
            return None
        applied = value.get("applied")
        for key in applied if isinstance(applied, list) else []:
            self._remember_input(str(key))
        state = value.get("state")
        self._text = _ENCODER.encode(state)
        changes = value.get("changes")
        self._changes = changes if isinstance(changes, int) else 0
        return Restored(state, self._changes, str(value.get("saved_at", "")))

    def applied(self, event: Envelope) -> bool:
        """Whether `event` is already in the worker's state (a redelivery to skip)."""
        return input_key(event) in self._applied_set

    def encode(self, state: Any) -> str:
        """The JSON text of a state.

        Raises:
            WorkerError: `state` is not a JSON value (NaN and infinities included).
        """
        try:
            return _ENCODER.encode(state)
        except (TypeError, ValueError) as exc:
            raise WorkerError(self.worker_id, f"snapshot() is not a JSON value ({exc})") from None

    async def record(self, event: Envelope, state: Any) -> bool:
        """Note that `event` left the worker in `state`; save it if it changed.

        Returns:
            True if something was written.

        Raises:
            WorkerError: `state` is not JSON.
            StateError: the write failed (`ConcurrencyError`: another instance wrote); the
                state stays pending and `flush` retries it.
        """
        text = self.encode(state)
        if text == self._text:
            if self._pending is None:
                return False
            await self.flush()
            return True
        self._remember_input(input_key(event))
        self._text = text
        self._changes += 1
        self._pending = {
            "format": SNAPSHOT_FORMAT,
            "worker_id": self.worker_id,
            "fingerprint": self.fingerprint,
            "state": json.loads(text),
            "applied": list(self._applied),
            "changes": self._changes,
            "saved_at": datetime.now(UTC).isoformat(),
        }
        await self.flush()
        return True

    async def flush(self) -> None:
        """Save the pending state, if any.

        Raises:
            StateError: the write failed (the state stays pending).
        """
        pending = self._pending
        if pending is None:
            return
        etag = self._etag
        self._etag = await self.store.save(self.key, pending, etag=etag, first_write=etag is None)
        self._pending = None
        self.saves += 1
