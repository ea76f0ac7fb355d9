"""Event buses: the port, lane validation, and adapters (memory here; nats, dapr beside it)."""

from virtufin.bus.memory import MemoryBus
from virtufin.bus.port import DEFAULT_MAX_DELIVERIES, AsyncHandler, Delivery, EventBus, Subscription
from virtufin.bus.validation import LaneValidator

__all__ = [
    "DEFAULT_MAX_DELIVERIES",
    "AsyncHandler",
    "Delivery",
    "EventBus",
    "LaneValidator",
    "MemoryBus",
    "Subscription",
]
