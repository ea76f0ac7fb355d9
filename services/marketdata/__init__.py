"""The marketdata service: Virtufin's WebSocketManager role, plus dataset replays.

Serves ``virtufin.MarketData`` (`servicer`) over the connectors of
`virtufin.marketdata.connectors`: venue WebSockets (connect, correlated send, reconnect with
backoff and re-subscription) whose frames are normalised into Virtufin's market-data payloads
on ``act.exchange.<venue>…``, and replays of the hive Parquet dataset as bar events. Connection
status changes are announced on ``marketdata.infra.connection``
(``com.virtufin.marketdata.connection.<status>``), start and stop on ``marketdata.lifecycle``.

Environment (besides the bootstrap's): ``VIRTUFIN_REPLAY_VENUE`` (venue token of replayed
bars, default ``replay``), ``VIRTUFIN_REPLAY_LANE`` (``act``, the default, or ``hyp``),
``VIRTUFIN_REPLICA_ID`` (the owner instance reported by ``List``).
"""

from __future__ import annotations

import os
import socket
from typing import Literal

from services.bootstrap.context import ServiceContext
from services.marketdata.servicer import MarketDataServicer
from virtufin import topics
from virtufin.bus.validation import LaneValidator
from virtufin.envelope import Envelope
from virtufin.errors import ConfigError
from virtufin.marketdata.connectors import ConnectionManager, ReplayManager, WebSocketConnection
from virtufin.proto import ensure_built
from virtufin.topics import EventTypes

ensure_built()
from virtufin.proto.gen import marketdata_pb2, marketdata_pb2_grpc  # noqa: E402

__all__ = ["serve"]

_SOURCE = topics.source_urn("marketdata")


def _lane() -> Literal["act", "hyp"]:
    lane = (os.environ.get("VIRTUFIN_REPLAY_LANE") or "act").strip().lower()
    if lane not in ("act", "hyp"):
        raise ConfigError("environment", "VIRTUFIN_REPLAY_LANE", f"act or hyp ({lane!r})")
    return "act" if lane == "act" else "hyp"


async def serve(ctx: ServiceContext) -> None:
    """Run the marketdata service until shutdown (the `services` serve convention)."""
    bus = await ctx.open_bus(validator=LaneValidator())
    instance = os.environ.get("VIRTUFIN_REPLICA_ID") or f"{socket.gethostname()}:{ctx.port}"
    connection_topic = topics.infra(ctx.name, "infra", "connection")
    lifecycle_topic = topics.infra(ctx.name, "lifecycle")

    async def announce(conn: WebSocketConnection) -> None:
        await bus.publish(
            connection_topic,
            Envelope.new(
                type=EventTypes.service(ctx.name, "connection", conn.status.value),
                source=_SOURCE,
                subject=f"connection/{conn.id}",
                data={
                    "id": conn.id,
                    "url": conn.url,
                    "venue": conn.venue,
                    "status": conn.status.value,
                    "publish_topic": conn.publish_topic,
                    "last_error": conn.last_error,
                    "frames_published": conn.frames_published,
                    "owner_instance": instance,
                },
            ),
        )

    async def lifecycle(event: str) -> None:
        await bus.publish(
            lifecycle_topic,
            Envelope.new(
                type=EventTypes.service(ctx.name, "lifecycle", event),
                source=_SOURCE,
                data={"service": ctx.name, "instance": instance},
            ),
        )

    connections = ConnectionManager(publish=bus.publish, on_status=announce, instance=instance)
    replays = ReplayManager(
        publish=bus.publish,
        venue=os.environ.get("VIRTUFIN_REPLAY_VENUE") or "replay",
        lane=_lane(),
    )

    async def stopping() -> None:
        await replays.close()
        await connections.close()
        await lifecycle("stopped")

    # Runs before the bus closes (hooks run last-added first; the bus was added before).
    ctx.on_shutdown("connectors", stopping)
    ctx.add_servicer(
        marketdata_pb2_grpc.add_MarketDataServicer_to_server,
        MarketDataServicer(connections, replays),
        marketdata_pb2.DESCRIPTOR.services_by_name["MarketData"],
    )

    async def startup() -> None:
        await lifecycle("online")

    await ctx.run(startup=startup)
