"""Worker lifecycle: states, the operations allowed in each, lifecycle and heartbeat events, and
the limits on environment variables and tags.

States: ``created → stopped ⇄ running → stopped → deleted``, plus ``failed`` (from starting or
running; a failed worker can be started again or deleted). Lifecycle events go to
``workmanager.lifecycle`` as ``com.virtufin.workmanager.lifecycle.<event>``; heartbeats to
``workmanager.infra.worker`` as ``com.virtufin.workmanager.infra.worker.heartbeat``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from virtufin.envelope import Envelope
from virtufin.errors import WorkerError
from virtufin.runtime.constants import MAX_ENV_VARS, MAX_KEY_CHARS, MAX_TAGS, MAX_VALUE_CHARS
from virtufin.topics import EventTypes

__all__ = [
    "HEARTBEAT_TYPE",
    "LifecycleEvent",
    "WorkerState",
    "check_env",
    "check_operation",
    "check_tags",
    "heartbeat_envelope",
    "lifecycle_envelope",
    "lifecycle_type",
]

HEARTBEAT_TYPE: Final = EventTypes.service("workmanager", "infra", "worker.heartbeat")
_ENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class WorkerState(StrEnum):
    """Where a worker is in its life."""

    CREATED = "created"
    STOPPED = "stopped"
    RUNNING = "running"
    FAILED = "failed"
    DELETED = "deleted"


class LifecycleEvent(StrEnum):
    """The suffix of a lifecycle event type (Virtufin's ``SystemEvents``)."""

    REGISTERED = "registered"
    STARTING = "starting"
    ONLINE = "online"
    DEGRADED = "degraded"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


_ALLOWED: Final[Mapping[str, frozenset[WorkerState]]] = {
    "start": frozenset({WorkerState.STOPPED, WorkerState.FAILED}),
    "stop": frozenset({WorkerState.RUNNING, WorkerState.FAILED}),
    "delete": frozenset({WorkerState.CREATED, WorkerState.STOPPED, WorkerState.FAILED}),
    "load_code": frozenset({WorkerState.STOPPED, WorkerState.RUNNING, WorkerState.FAILED}),
}


def check_operation(worker_id: str, state: WorkerState, operation: str) -> None:
    """Raise `WorkerError` unless `operation` is allowed in `state`."""
    if state not in _ALLOWED[operation]:
        raise WorkerError(worker_id, f"cannot {operation.replace('_', ' ')} a {state.value} worker")


def lifecycle_type(event: LifecycleEvent) -> str:
    """``com.virtufin.workmanager.lifecycle.<event>``."""
    return EventTypes.service("workmanager", "lifecycle", event.value)


def _envelope(kind: str, source: str, worker_id: str, data: dict[str, Any]) -> Envelope:
    now = datetime.now(UTC)
    return Envelope.new(
        type=kind,
        source=source,
        subject=f"worker/{worker_id}",
        data=data,
        time=now,
        clocktype="wall",
        eventtime=now,
        walltime=now,
    )


def lifecycle_envelope(
    event: LifecycleEvent, *, source: str, worker_id: str, data: Mapping[str, Any]
) -> Envelope:
    """A lifecycle event about `worker_id` (data: worker_id, state, version, reason, …)."""
    return _envelope(lifecycle_type(event), source, worker_id, {"worker_id": worker_id, **data})


def heartbeat_envelope(*, source: str, worker_id: str, data: Mapping[str, Any]) -> Envelope:
    """A heartbeat of one running worker (state, health, metrics)."""
    return _envelope(HEARTBEAT_TYPE, source, worker_id, {"worker_id": worker_id, **data})


def _check_pair(worker_id: str, what: str, key: str, value: str) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS:
        raise WorkerError(worker_id, f"{what} key must be 1-{MAX_KEY_CHARS} characters")
    if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
        raise WorkerError(
            worker_id, f"{what} {key!r}: value must be a string of at most {MAX_VALUE_CHARS} chars"
        )


def check_tags(worker_id: str, tags: Mapping[str, str]) -> None:
    """At most 50 tags; keys 1-128 characters, values at most 1024."""
    if len(tags) > MAX_TAGS:
        raise WorkerError(worker_id, f"at most {MAX_TAGS} tags ({len(tags)} given)")
    for key, value in tags.items():
        _check_pair(worker_id, "tag", key, value)


def check_env(worker_id: str, env: Mapping[str, str]) -> None:
    """At most 100 variables; names ``[A-Za-z_][A-Za-z0-9_]*`` up to 128, values up to 1024."""
    if len(env) > MAX_ENV_VARS:
        raise WorkerError(worker_id, f"at most {MAX_ENV_VARS} environment variables")
    for key, value in env.items():
        _check_pair(worker_id, "environment variable", key, value)
        if not _ENV_NAME.match(key):
            raise WorkerError(worker_id, f"environment variable name {key!r} is not valid")
