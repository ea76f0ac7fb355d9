"""The gateway: the one gRPC entry point for every client (Virtufin's virtufin-api role).

Serves ``virtufin.Gateway`` (dynamic calls to backends, a filtered event stream),
``virtufin.State``, ``virtufin.Pubsub`` and ``virtufin.Config`` on one port, plus health and
reflection. Only the gateway talks to the state store and the broker on behalf of clients.

Environment (besides the bootstrap's): ``VIRTUFIN_PUBSUB_IDLE_SECONDS`` (300), and the
retry/breaker settings of `ResilienceConfig`.
"""

from __future__ import annotations

import os

from services.bootstrap.context import ServiceContext
from services.gateway.backends import BackendPool
from services.gateway.config import ConfigServicer
from services.gateway.descriptors import SchemaCache
from services.gateway.gateway import GatewayServicer
from services.gateway.hub import EventHub
from services.gateway.pubsub import DEFAULT_IDLE_SECONDS, PubsubServicer
from services.gateway.resilience import ResilienceConfig
from services.gateway.state import StateServicer
from services.gateway.telemetry import GatewayCollector
from virtufin.bus.validation import LaneValidator
from virtufin.proto import ensure_built
from virtufin.scenarios import ScenarioRegistry

ensure_built()
from virtufin.proto.gen import gateway_pb2, gateway_pb2_grpc  # noqa: E402

__all__ = ["serve"]


async def serve(ctx: ServiceContext) -> None:
    """Run the gateway until shutdown (the `services` serve convention)."""
    state = await ctx.open_state()
    registry = ScenarioRegistry(state)
    await registry.seed_live()
    bus = await ctx.open_bus(validator=LaneValidator(registry))
    hub = EventHub(bus)
    ctx.on_shutdown("event hub", hub.close)

    schemas: SchemaCache | None = None

    def changed(backend: str, why: str) -> None:
        if schemas is not None:
            schemas.invalidate(backend, why)

    keys = ctx.settings.api_keys
    backends = BackendPool(
        ctx.services,
        gateway_name=ctx.name,
        config=ResilienceConfig.from_env(),
        api_key=keys[0] if keys else None,
        on_change=changed,
    )
    schemas = SchemaCache(backends)
    ctx.on_shutdown("backends", backends.close)
    idle = float(os.environ.get("VIRTUFIN_PUBSUB_IDLE_SECONDS") or DEFAULT_IDLE_SECONDS)
    pubsub = PubsubServicer(bus=bus, hub=hub, stopping=ctx.stopping, idle_seconds=idle)
    ctx.on_shutdown("pubsub sweep", pubsub.close)
    ctx.metrics.registry.register(GatewayCollector(backends, schemas, hub))

    services = gateway_pb2.DESCRIPTOR.services_by_name
    ctx.add_servicer(
        gateway_pb2_grpc.add_GatewayServicer_to_server,
        GatewayServicer(
            backends=backends,
            schemas=schemas,
            hub=hub,
            stopping=ctx.stopping,
            pubsub_name=ctx.settings.pubsub_name,
        ),
        services["Gateway"],
    )
    ctx.add_servicer(
        gateway_pb2_grpc.add_StateServicer_to_server,
        StateServicer(store=state, bus=bus, services=ctx.services),
        services["State"],
    )
    ctx.add_servicer(gateway_pb2_grpc.add_PubsubServicer_to_server, pubsub, services["Pubsub"])
    ctx.add_servicer(
        gateway_pb2_grpc.add_ConfigServicer_to_server,
        ConfigServicer(ctx.services),
        services["Config"],
    )

    async def startup() -> None:
        backends.start()
        pubsub.start()

    await ctx.run(startup=startup)
