"""Choose and start the bus adapter a process runs on (`Settings.bus`).

Adapters that need a broker client are imported only here, on demand, so that core code and
the embedded default never import nats-py or the Dapr SDK.
"""

from __future__ import annotations

from virtufin.bus.memory import MemoryBus
from virtufin.bus.port import EventBus
from virtufin.bus.validation import LaneValidator
from virtufin.config import Settings
from virtufin.errors import ConfigError

__all__ = ["create_bus"]


async def create_bus(
    settings: Settings, *, validator: LaneValidator | None = None, name: str = "virtufin"
) -> EventBus:
    """A started bus of the kind `settings.bus` names.

    Args:
        settings: `bus` picks the adapter; `nats_url` and `pubsub_name` configure it.
        validator: lane rules checked on publish (default: topic rules, no registry).
        name: the process's name on the broker; NATS uses it as the durable-consumer prefix,
            so replicas of one service must pass the same name.

    Raises:
        ConfigError: unknown kind, or the adapter's module cannot be imported.
        BusError: the broker cannot be reached.
    """
    kind = settings.bus
    if kind == "memory":
        return MemoryBus(validator=validator)
    if kind == "nats":
        try:
            from virtufin.bus.nats import NatsBus
        except ImportError as exc:
            raise _unavailable("NatsBus", exc) from exc
        return await NatsBus.connect(
            url=settings.nats_url,
            validator=validator,
            name=name,
            ordered_ack_wait_seconds=settings.nats_ordered_ack_wait,
        )
    if kind == "dapr":
        try:
            from virtufin.bus.dapr import DaprBus
        except ImportError as exc:
            raise _unavailable("DaprBus", exc) from exc
        bus = DaprBus(pubsub_name=settings.pubsub_name, validator=validator)
        await bus.start()
        return bus
    raise ConfigError("settings", "bus", f"unknown bus kind {kind!r} (memory, nats or dapr)")


def _unavailable(adapter: str, exc: ImportError) -> ConfigError:
    return ConfigError("settings", "bus", f"the {adapter} adapter cannot be loaded: {exc}")
