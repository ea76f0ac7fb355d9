"""The ``virtufin.MarketData`` RPCs over the connectors (`virtufin.marketdata.connectors`).

Request checks answer INVALID_ARGUMENT naming the field; an unknown connection or replay id
is NOT_FOUND; a connection that is not open is FAILED_PRECONDITION; a correlated ``Send``
without a reply in time is DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Final

import grpc

from services.bootstrap.errors import RpcError
from virtufin.errors import ConfigError, TopicError
from virtufin.marketdata.connectors import (
    ConnectionManager,
    ConnectionStatus,
    Replay,
    ReplayManager,
    ReplayStatus,
    WebSocketConnection,
    WebSocketError,
)
from virtufin.proto import ensure_built

ensure_built()
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

from virtufin.proto.gen import marketdata_pb2, marketdata_pb2_grpc  # noqa: E402

__all__ = ["MAX_SEND_TIMEOUT_MS", "MarketDataServicer", "connection_info", "replay_info"]

MAX_SEND_TIMEOUT_MS: Final = 60_000
_STATUS: Final = {
    ConnectionStatus.CONNECTING: marketdata_pb2.CONNECTION_STATUS_CONNECTING,
    ConnectionStatus.CONNECTED: marketdata_pb2.CONNECTION_STATUS_CONNECTED,
    ConnectionStatus.RECONNECTING: marketdata_pb2.CONNECTION_STATUS_RECONNECTING,
    ConnectionStatus.DISCONNECTED: marketdata_pb2.CONNECTION_STATUS_DISCONNECTED,
    ConnectionStatus.ERROR: marketdata_pb2.CONNECTION_STATUS_ERROR,
}
_REPLAY_STATUS: Final = {
    ReplayStatus.RUNNING: marketdata_pb2.REPLAY_STATUS_RUNNING,
    ReplayStatus.FINISHED: marketdata_pb2.REPLAY_STATUS_FINISHED,
    ReplayStatus.STOPPED: marketdata_pb2.REPLAY_STATUS_STOPPED,
    ReplayStatus.FAILED: marketdata_pb2.REPLAY_STATUS_FAILED,
}


def _invalid(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def connection_info(conn: WebSocketConnection, instance: str) -> marketdata_pb2.ConnectionInfo:
    """The proto view of a connection."""
    return marketdata_pb2.ConnectionInfo(
        id=conn.id,
        url=conn.url,
        venue=conn.venue,
        status=_STATUS[conn.status],
        auto_reconnect=conn.auto_reconnect,
        publish_topic=conn.publish_topic,
        connected_at=_timestamp(conn.connected_at),
        owner_instance=instance,
        last_error=conn.last_error if conn.status is not ConnectionStatus.CONNECTED else "",
    )


def replay_info(replay: Replay) -> marketdata_pb2.ReplayInfo:
    """The proto view of a replay."""
    return marketdata_pb2.ReplayInfo(
        id=replay.id,
        dataset_path=str(replay.root),
        selector=replay.selector,
        symbols=list(replay.symbols),
        speed=replay.speed,
        status=_REPLAY_STATUS[replay.status],
        events_published=replay.events_published,
        started_at=_timestamp(replay.started_at),
        cursor_time=replay.cursor_time.isoformat().replace("+00:00", "Z")
        if replay.cursor_time
        else "",
        last_error=replay.last_error,
    )


def _connection_error(exc: WebSocketError) -> RpcError:
    code = grpc.StatusCode.NOT_FOUND if exc.not_found else grpc.StatusCode.FAILED_PRECONDITION
    if "cannot connect" in exc.reason:
        code = grpc.StatusCode.UNAVAILABLE
    return RpcError(code, str(exc))


class MarketDataServicer(marketdata_pb2_grpc.MarketDataServicer):  # type: ignore[misc]
    """Implements ``virtufin.MarketData``.

    Args:
        connections: this instance's sockets.
        replays: this instance's replays.
    """

    def __init__(self, connections: ConnectionManager, replays: ReplayManager) -> None:
        self._connections = connections
        self._replays = replays

    def _get(self, connection_id: str) -> WebSocketConnection:
        if not connection_id.strip():
            raise _invalid("id is required")
        try:
            return self._connections.get(connection_id)
        except WebSocketError as exc:
            raise _connection_error(exc) from None

    def _info(self, conn: WebSocketConnection) -> marketdata_pb2.ConnectionInfo:
        return connection_info(conn, self._connections.instance)

    # ------------------------------------------------------------------ WebSockets

    async def Connect(
        self, request: marketdata_pb2.ConnectRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.ConnectResponse:
        if not request.url.strip():
            raise _invalid("url is required (ws:// or wss://)")
        try:
            conn = await self._connections.connect(
                request.url.strip(),
                venue=request.venue.strip(),
                auto_reconnect=request.auto_reconnect,
            )
        except WebSocketError as exc:
            raise _connection_error(exc) from None
        return marketdata_pb2.ConnectResponse(id=conn.id, status=_STATUS[conn.status])

    async def List(
        self, request: marketdata_pb2.ListConnectionsRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.ListConnectionsResponse:
        return marketdata_pb2.ListConnectionsResponse(
            connections=[self._info(c) for c in self._connections.list()]
        )

    async def Disconnect(
        self, request: marketdata_pb2.DisconnectRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.DisconnectResponse:
        if not request.id.strip():
            raise _invalid("id is required")
        return marketdata_pb2.DisconnectResponse(
            found=await self._connections.disconnect(request.id)
        )

    async def StartPublish(
        self, request: marketdata_pb2.StartPublishRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.StartPublishResponse:
        conn = self._get(request.id)
        if not request.topic.strip():
            raise _invalid("topic is required (act.exchange.<venue>… topic or pattern)")
        try:
            conn.start_publish(request.topic.strip())
        except TopicError as exc:
            raise _invalid(f"topic: {exc}") from None
        return marketdata_pb2.StartPublishResponse(connection=self._info(conn))

    async def StopPublish(
        self, request: marketdata_pb2.StopPublishRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.StopPublishResponse:
        conn = self._get(request.id)
        conn.stop_publish()
        return marketdata_pb2.StopPublishResponse(connection=self._info(conn))

    async def Send(
        self, request: marketdata_pb2.SendRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.SendResponse:
        conn = self._get(request.id)
        if not request.message:
            raise _invalid("message is required")
        if not 0 <= request.timeout_ms <= MAX_SEND_TIMEOUT_MS:
            raise _invalid(f"timeout_ms must be 0..{MAX_SEND_TIMEOUT_MS} ({request.timeout_ms})")
        try:
            reply = await conn.send(request.message, timeout_s=request.timeout_ms / 1000)
        except WebSocketError as exc:
            raise _connection_error(exc) from None
        except ValueError as exc:
            raise _invalid(f"message: {exc}") from None
        return marketdata_pb2.SendResponse(reply=reply)

    # ------------------------------------------------------------------ replays

    async def StartReplay(
        self, request: marketdata_pb2.StartReplayRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.StartReplayResponse:
        if not request.dataset_path.strip():
            raise _invalid("dataset_path is required")
        if not math.isfinite(request.speed) or request.speed < 0:
            raise _invalid(f"speed must be 0 (as fast as possible) or above ({request.speed})")
        try:
            replay = self._replays.start(
                request.dataset_path.strip(),
                request.selector.strip(),
                symbols=[s.strip() for s in request.symbols if s.strip()],
                speed=request.speed,
            )
        except ConfigError as exc:
            raise _invalid(str(exc)) from None
        return marketdata_pb2.StartReplayResponse(
            id=replay.id, status=_REPLAY_STATUS[replay.status]
        )

    async def StopReplay(
        self, request: marketdata_pb2.StopReplayRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.StopReplayResponse:
        if not request.id.strip():
            raise _invalid("id is required")
        replay = await self._replays.stop(request.id)
        if replay is None:
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"no replay {request.id!r}")
        return marketdata_pb2.StopReplayResponse(replay=replay_info(replay))

    async def ListReplays(
        self, request: marketdata_pb2.ListReplaysRequest, context: grpc.aio.ServicerContext
    ) -> marketdata_pb2.ListReplaysResponse:
        return marketdata_pb2.ListReplaysResponse(
            replays=[replay_info(r) for r in self._replays.list()]
        )
