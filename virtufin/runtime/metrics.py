"""Per-worker metrics: events in and out, errors, and a latency histogram.

Cheap enough for the in-process fast path: a few integer additions per event. Buckets are
powers of two in microseconds (< 1 µs, < 2 µs, < 4 µs, … < 2²⁴ µs ≈ 16.8 s, then +Inf), fixed,
so snapshots of different workers add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

__all__ = ["LATENCY_BUCKETS_US", "MetricsSnapshot", "WorkerMetrics"]

LATENCY_BUCKETS_US: Final = tuple(1 << i for i in range(25))
"""Upper bounds (exclusive) of the histogram buckets, in µs; one more bucket holds the rest."""
_SLOTS: Final = 64  # bit_length of any elapsed time fits


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """A copy of the counters at one moment; `histogram` maps an upper bound (µs) to a count."""

    events_in: int
    events_out: int
    errors: int
    dead_lettered: int
    mean_us: float
    p50_us: float
    p99_us: float
    histogram: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "events_in": self.events_in,
            "events_out": self.events_out,
            "errors": self.errors,
            "dead_lettered": self.dead_lettered,
            "latency_us": {"mean": self.mean_us, "p50": self.p50_us, "p99": self.p99_us},
            "histogram": dict(self.histogram),
        }


class WorkerMetrics:
    """Counters one engine updates; `snapshot` reads them."""

    __slots__ = ("buckets", "dead_lettered", "errors", "events_in", "events_out", "total_ns")

    def __init__(self) -> None:
        self.events_in = 0
        self.events_out = 0
        self.errors = 0
        self.dead_lettered = 0
        self.total_ns = 0
        self.buckets = [0] * _SLOTS

    def observe(self, elapsed_ns: int, outputs: int) -> None:
        """Count one processed event that took `elapsed_ns` and produced `outputs` events.
        (`InProcessEngine.process_routed` inlines this body: keep the two in step.)"""
        self.events_in += 1
        self.events_out += outputs
        self.total_ns += elapsed_ns
        self.buckets[(elapsed_ns // 1000).bit_length()] += 1

    def failed(self, elapsed_ns: int) -> None:
        """Count one event the worker failed on (it still counts as an input)."""
        self.observe(elapsed_ns, 0)
        self.errors += 1

    def _counts(self) -> list[int]:
        n = len(LATENCY_BUCKETS_US)
        return [*self.buckets[:n], sum(self.buckets[n:])]

    def _quantile(self, counts: list[int], q: float) -> float:
        """The upper bound of the bucket holding the `q` quantile."""
        total = sum(counts)
        if total == 0:
            return 0.0
        seen = 0
        for i, count in enumerate(counts):
            seen += count
            if count and seen >= q * total:
                return float(LATENCY_BUCKETS_US[i]) if i < len(LATENCY_BUCKETS_US) else float("inf")
        return float("inf")

    def snapshot(self) -> MetricsSnapshot:
        counts = self._counts()
        observed = sum(counts)
        labels = [str(b) for b in LATENCY_BUCKETS_US] + ["+Inf"]
        return MetricsSnapshot(
            events_in=self.events_in,
            events_out=self.events_out,
            errors=self.errors,
            dead_lettered=self.dead_lettered,
            mean_us=(self.total_ns / observed / 1000.0) if observed else 0.0,
            p50_us=self._quantile(counts, 0.5),
            p99_us=self._quantile(counts, 0.99),
            histogram=dict(zip(labels, counts, strict=True)),
        )
