"""The WorkManager's Prometheus metrics (Virtufin's ``WorkerCountByStatus``,
``MessagesProcessed``), read at scrape time from this replica's supervisor."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.workmanager.recovery import Recovery
from virtufin.runtime.lifecycle import WorkerState
from virtufin.runtime.supervisor import Supervisor

__all__ = ["WorkManagerCollector"]


class WorkManagerCollector(Collector):
    """Workers by state, events per worker, and whether this replica led recovery."""

    def __init__(self, supervisor: Supervisor, recovery: Recovery) -> None:
        self._supervisor = supervisor
        self._recovery = recovery

    def collect(self) -> Iterator[Metric]:
        workers = self._supervisor.list_workers()
        by_state = GaugeMetricFamily(
            "virtufin_workmanager_workers", "Workers on this replica by state.", labels=("state",)
        )
        counts = {state.value: 0 for state in WorkerState if state is not WorkerState.DELETED}
        for info in workers:
            counts[info.state.value] = counts.get(info.state.value, 0) + 1
        for state, count in counts.items():
            by_state.add_metric((state,), count)
        yield by_state
        families = {
            name: CounterMetricFamily(
                f"virtufin_workmanager_worker_{name}",
                f"Worker {name.replace('_', ' ')}.",
                labels=("worker",),
            )
            for name in ("events_in", "events_out", "errors", "dead_lettered")
        }
        for info in workers:
            snapshot = self._supervisor.metrics(info.id)
            for name, family in families.items():
                family.add_metric((info.id,), getattr(snapshot, name))
        yield from families.values()
        last = self._recovery.last
        yield GaugeMetricFamily(
            "virtufin_workmanager_recovery_leader",
            "1 if this replica held the lease at its last recovery.",
            value=1.0 if last is not None and last.leader else 0.0,
        )
