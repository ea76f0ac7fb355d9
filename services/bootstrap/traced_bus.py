"""`TracedBus`: the bus a service gets, carrying the request's trace into and out of events.

On publish, an event without a ``traceparent`` gets the current request's (`tracing`), so that
whatever a request causes (lifecycle events, state changes, worker outputs) joins its trace.
On delivery, the handler runs with the event's ``traceparent`` and ``correlationid`` as its
context, so that what the handler publishes or logs continues that trace.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.bootstrap.tracing import adopt_context, traceparent
from virtufin.bus.port import DEFAULT_MAX_DELIVERIES, AsyncHandler, Delivery, EventBus, Subscription
from virtufin.envelope import Envelope

__all__ = ["TracedBus"]


class TracedBus(EventBus):
    """Wrap `inner`; every other behaviour is the inner bus's.

    Example:
        >>> bus = TracedBus(await create_bus(settings))                # doctest: +SKIP
    """

    def __init__(self, inner: EventBus) -> None:
        self.inner = inner
        self.name = inner.name

    async def publish(self, topic: str, envelope: Envelope) -> None:
        trace = traceparent()
        if trace is not None and envelope.traceparent is None:
            envelope = envelope.with_changes(traceparent=trace)
        await self.inner.publish(topic, envelope)

    async def publish_many(self, items: Sequence[tuple[str, Envelope]]) -> None:
        trace = traceparent()
        if trace is not None:
            items = [
                (t, e if e.traceparent is not None else e.with_changes(traceparent=trace))
                for t, e in items
            ]
        await self.inner.publish_many(items)

    async def subscribe(
        self,
        pattern: str,
        handler: AsyncHandler,
        *,
        group: str | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        ordered: bool = False,
    ) -> Subscription:
        async def traced(envelope: Envelope, delivery: Delivery) -> None:
            adopt_context(envelope.correlationid, envelope.traceparent)
            await handler(envelope, delivery)

        return await self.inner.subscribe(
            pattern, traced, group=group, max_deliveries=max_deliveries, ordered=ordered
        )

    async def close(self) -> None:
        await self.inner.close()
