"""Worker metrics: counters and the power-of-two latency histogram."""

from __future__ import annotations

from virtufin.runtime.metrics import LATENCY_BUCKETS_US, WorkerMetrics


def test_counts_latency_and_quantiles():
    metrics = WorkerMetrics()
    for _ in range(98):
        metrics.observe(3_000, 1)  # 3 µs → bucket < 4 µs
    metrics.observe(150_000, 0)  # 150 µs → < 256 µs
    metrics.failed(2_000_000)  # 2 ms → < 2048 µs
    snap = metrics.snapshot()
    assert (snap.events_in, snap.events_out, snap.errors) == (100, 98, 1)
    assert (snap.p50_us, snap.p99_us) == (4, 256)
    assert snap.mean_us == (98 * 3 + 150 + 2000) / 100
    assert (snap.histogram["4"], snap.histogram["256"], snap.histogram["2048"]) == (98, 1, 1)
    assert sum(snap.histogram.values()) == 100
    assert len(snap.histogram) == len(LATENCY_BUCKETS_US) + 1
    assert snap.to_dict()["latency_us"] == {"mean": snap.mean_us, "p50": 4, "p99": 256}


def test_sub_microsecond_and_huge_latencies_land_in_the_end_buckets():
    metrics = WorkerMetrics()
    metrics.observe(400, 0)
    metrics.observe(10**12, 0)  # 1000 s
    snap = metrics.snapshot()
    assert (snap.histogram["1"], snap.histogram["+Inf"]) == (1, 1)
    assert snap.p99_us == float("inf")


def test_empty_metrics():
    snap = WorkerMetrics().snapshot()
    assert (snap.events_in, snap.mean_us, snap.p50_us) == (0, 0.0, 0.0)
