"""The NATS JetStream streams the platform needs, derived from `services.json`.

Dapr's `pubsub.jetstream` component does not create streams: they must exist before a sidecar
subscribes. One stream per topic family holds every subject of that family:

- ``VIRTUFIN_ACT``   ``act.>``    live market data
- ``VIRTUFIN_HYP``   ``hyp.>``    replayed market data
- ``VIRTUFIN_SC``    ``sc.>``     scenario events
- ``VIRTUFIN_INFRA`` ``<service>.>`` for every service, plus the single-token infrastructure
  topics services publish (the gateway's ``state-changes``)

The stream definitions are written as JetStream API `StreamConfig` JSON (the format
``nats stream add --config`` and ``$JS.API.STREAM.CREATE`` accept), one file per stream.

Example:
    >>> [s.name for s in stream_specs(load_services())]
    ['VIRTUFIN_ACT', 'VIRTUFIN_HYP', 'VIRTUFIN_SC', 'VIRTUFIN_INFRA']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from virtufin import topics
from virtufin.config import ServicesConfig
from virtufin.errors import ConfigError
from virtufin.lanes import Family, matches

__all__ = [
    "DAY_SECONDS",
    "StreamSpec",
    "infra_subjects",
    "stream_config",
    "stream_specs",
]

DAY_SECONDS: Final = 86_400
_NANOS: Final = 1_000_000_000
_DUPLICATE_WINDOW_SECONDS: Final = 120
_PREFIX: Final = "VIRTUFIN_"


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSpec:
    """One JetStream stream: its subjects and retention (ages in seconds)."""

    name: str
    subjects: tuple[str, ...]
    description: str
    max_age_secs: int
    storage: Literal["file", "memory"] = "file"
    num_replicas: int = 1
    duplicate_window_secs: int = _DUPLICATE_WINDOW_SECONDS


def infra_subjects(services: ServicesConfig) -> tuple[str, ...]:
    """``<service>.>`` for every service, plus published infra topics outside those prefixes.

    Raises:
        ConfigError: a service name is a topic family prefix (``act``, ``hyp``, ``sc``), so
            its infrastructure subjects would overlap a lane stream.
    """
    lane_heads = {f.value for f in Family if f is not Family.INFRA}
    subjects: list[str] = []
    for svc in services.services:
        if svc.name in lane_heads:
            raise ConfigError(
                services.path,
                f"services[name={svc.name}]",
                "a service may not be named after a topic family",
            )
        subjects.append(f"{svc.name}.>")
    # Platform topics no service entry owns: dead letters and the promotion audit trail.
    extra: set[str] = {
        f"{topic.split('.', 1)[0]}.>" for topic in (topics.DEAD_LETTER, topics.PROMOTION_AUDIT)
    }
    for svc in services.services:
        for pattern in svc.publishes:
            head = pattern.split(".", 1)[0]
            if head in lane_heads or any(matches(s, pattern) for s in (*subjects, *extra)):
                continue
            extra.add(pattern)
    return tuple(subjects) + tuple(sorted(extra))


def stream_specs(services: ServicesConfig) -> tuple[StreamSpec, ...]:
    """The four streams, lane families first, in a fixed order."""
    return (
        StreamSpec(
            name=f"{_PREFIX}ACT",
            subjects=(f"{Family.ACT.value}.>",),
            description="Live market data (act lane)",
            max_age_secs=7 * DAY_SECONDS,
        ),
        StreamSpec(
            name=f"{_PREFIX}HYP",
            subjects=(f"{Family.HYP.value}.>",),
            description="Replayed market data (hyp lanes, keyed by selector)",
            max_age_secs=DAY_SECONDS,
        ),
        StreamSpec(
            name=f"{_PREFIX}SC",
            subjects=(f"{Family.SCENARIO.value}.>",),
            description="Scenario events: orders, positions, PnL, risk, strategy",
            max_age_secs=30 * DAY_SECONDS,
        ),
        StreamSpec(
            name=f"{_PREFIX}INFRA",
            subjects=infra_subjects(services),
            description="Infrastructure topics: lifecycle, infra, audit, state changes",
            max_age_secs=7 * DAY_SECONDS,
        ),
    )


def stream_config(spec: StreamSpec) -> dict[str, Any]:
    """The JetStream API `StreamConfig` of `spec` (durations in nanoseconds)."""
    return {
        "name": spec.name,
        "description": spec.description,
        "subjects": list(spec.subjects),
        "retention": "limits",
        "storage": spec.storage,
        "discard": "old",
        "num_replicas": spec.num_replicas,
        "max_age": spec.max_age_secs * _NANOS,
        "duplicate_window": spec.duplicate_window_secs * _NANOS,
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_msgs_per_subject": -1,
        "max_msg_size": -1,
        "allow_direct": True,
        "deny_delete": False,
        "deny_purge": False,
        "allow_rollup_hdrs": False,
        "sealed": False,
    }
