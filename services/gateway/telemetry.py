"""The gateway's own Prometheus metrics, read at scrape time from its live objects."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.gateway.backends import BackendPool
from services.gateway.descriptors import SchemaCache
from services.gateway.hub import EventHub

__all__ = ["GatewayCollector"]

_BREAKER_VALUE = {"closed": 0.0, "half_open": 0.5, "open": 1.0}


class GatewayCollector(Collector):
    """Backend health and circuit state per address, streams, drops, reflection cache."""

    def __init__(self, backends: BackendPool, schemas: SchemaCache, hub: EventHub) -> None:
        self._backends = backends
        self._schemas = schemas
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        healthy = GaugeMetricFamily(
            "virtufin_gateway_backend_healthy",
            "1 while the address's health watch reports SERVING.",
            labels=("backend", "address"),
        )
        breaker = GaugeMetricFamily(
            "virtufin_gateway_backend_circuit",
            "Circuit breaker state: 0 closed, 0.5 half-open, 1 open.",
            labels=("backend", "address"),
        )
        for name in self._backends.names:
            for ep in self._backends.get(name).endpoints:
                healthy.add_metric((name, ep.address), 1.0 if ep.healthy else 0.0)
                breaker.add_metric((name, ep.address), _BREAKER_VALUE[ep.breaker.state.value])
        yield healthy
        yield breaker
        listeners = list(self._hub.listeners.values())
        yield GaugeMetricFamily(
            "virtufin_gateway_streams", "Open event streams.", value=len(listeners)
        )
        yield GaugeMetricFamily(
            "virtufin_gateway_bus_subscriptions",
            "Bus subscriptions the streams share.",
            value=self._hub.bus_subscriptions,
        )
        yield CounterMetricFamily(
            "virtufin_gateway_stream_dropped_events",
            "Events dropped from full stream queues (open streams).",
            value=sum(lst.dropped for lst in listeners),
        )
        yield CounterMetricFamily(
            "virtufin_gateway_reflection_loads",
            "Backend schemas loaded through reflection.",
            value=self._schemas.loads,
        )
        yield CounterMetricFamily(
            "virtufin_gateway_reflection_invalidations",
            "Reflection cache invalidations (restarts, UNIMPLEMENTED, unknown methods).",
            value=self._schemas.invalidations,
        )
