"""The promotion log: append-only entries in the state store, each announced as a CloudEvent.

Entries live at ``promotion.log.<000000000n>`` (`statekeys.promotion_entry`), written with
``first_write=True``: a sequence number is claimed by exactly one writer and never rewritten.
Shape (docs/spec/promotion.md)::

    {"sequence", "strategy", "version", "parameters", "scenario", "from", "to",
     "decision": "promoted" | "refused" | "rolled_back",
     "checks": [{"name", "passed", "actual", "threshold"}], "runid", "at",
     "deployment"?, "retired"?, "reason"?}
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from virtufin import statekeys, topics
from virtufin.envelope import Envelope
from virtufin.errors import ConcurrencyError, StateError
from virtufin.state.port import StateStore

__all__ = ["AUDIT_SOURCE", "append_entry", "audit_envelope", "read_log"]

AUDIT_SOURCE: Final = topics.source_urn("pipelines")
_MAX_ATTEMPTS: Final = 100


async def append_entry(store: StateStore, entry: dict[str, Any]) -> dict[str, Any]:
    """Append `entry` with the next free sequence number and ``at``; return what was stored.

    Raises:
        StateError: too many concurrent writers (100 sequence numbers taken in a row).
    """
    existing = await store.keys(statekeys.PROMOTION_LOG_PREFIX)
    sequence = len(existing)
    for _ in range(_MAX_ATTEMPTS):
        stored = {
            **entry,
            "sequence": sequence,
            "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        try:
            await store.save(statekeys.promotion_entry(sequence), stored, first_write=True)
        except ConcurrencyError:
            sequence += 1
            continue
        return stored
    raise StateError(statekeys.promotion_entry(sequence), "could not claim a sequence number")


async def read_log(store: StateStore) -> list[dict[str, Any]]:
    """Every entry, in sequence order."""
    keys = await store.keys(statekeys.PROMOTION_LOG_PREFIX)
    items = await store.get_bulk(keys)
    return [items[k].value for k in keys if k in items]


def audit_envelope(entry: dict[str, Any]) -> Envelope:
    """The CloudEvent announcing a log entry on ``promotion.audit``."""
    return Envelope.new(
        type=f"com.virtufin.promotion.audit.{entry['decision']}",
        source=AUDIT_SOURCE,
        subject=f"{entry.get('strategy')}@{entry.get('version')}",
        data=entry,
        runid=entry.get("runid"),
        correlationid=str(entry.get("scenario") or ""),
    )
