"""A local Binance-style WebSocket venue for the connector tests (real sockets, no mocks).

It answers ``{"method": "SUBSCRIBE"|"UNSUBSCRIBE", "params": [...], "id": n}`` with
``{"result": null, "id": n}`` (unless told to stay silent), remembers what each connection
subscribed to, pushes frames to every open connection on demand and can drop them all.
"""

from __future__ import annotations

import json
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve


def trade(symbol: str, trade_id: int, price: str, qty: str, *, maker: bool, ms: int) -> str:
    return json.dumps(
        {
            "e": "trade",
            "E": ms,
            "s": symbol,
            "t": trade_id,
            "p": price,
            "q": qty,
            "T": ms,
            "m": maker,
            "M": True,
        }
    )


def depth(symbol: str, first: int, last: int, *, ms: int) -> str:
    return json.dumps(
        {
            "e": "depthUpdate",
            "E": ms,
            "s": symbol,
            "U": first,
            "u": last,
            "b": [["100.5", "2.0"], ["100.4", "0"]],
            "a": [["100.6", "1.5"]],
        }
    )


def kline(symbol: str, start_ms: int, close: str, *, closed: bool, interval: str = "1m") -> str:
    return json.dumps(
        {
            "e": "kline",
            "E": start_ms + 60_000,
            "s": symbol,
            "k": {
                "t": start_ms,
                "T": start_ms + 59_999,
                "s": symbol,
                "i": interval,
                "o": "100.0",
                "c": close,
                "h": "102.0",
                "l": "99.0",
                "v": "12.5",
                "x": closed,
            },
        }
    )


def combined(stream: str, frame: str) -> str:
    return json.dumps({"stream": stream, "data": json.loads(frame)})


class FakeVenue:
    """Start with ``async with FakeVenue() as venue``; `url` is its ws:// address."""

    def __init__(self) -> None:
        self.connections: list[ServerConnection] = []
        self.received: list[dict[str, Any]] = []
        self.subscriptions: list[list[str]] = []  # per connection, in order of arrival
        self.silent_ids: set[Any] = set()
        self.reply_twice = False
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def __aenter__(self) -> FakeVenue:
        self._server = await serve(self._handle, "127.0.0.1", self.port or 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def restart(self) -> None:
        """Stop listening, then listen again on the same port."""
        await self.stop()
        await self.__aenter__()

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        streams: list[str] = []
        self.subscriptions.append(streams)
        try:
            async for raw in ws:
                message = json.loads(raw)
                self.received.append(message)
                if message.get("method") == "SUBSCRIBE":
                    streams.extend(message.get("params", []))
                if message.get("method") == "UNSUBSCRIBE":
                    for stream in message.get("params", []):
                        if stream in streams:
                            streams.remove(stream)
                if "id" in message and message["id"] not in self.silent_ids:
                    reply = json.dumps({"result": None, "id": message["id"]})
                    await ws.send(reply)
                    if self.reply_twice:
                        await ws.send(json.dumps({"result": "late", "id": message["id"]}))
        finally:
            if ws in self.connections:
                self.connections.remove(ws)

    async def push(self, *frames: str) -> None:
        for ws in list(self.connections):
            for frame in frames:
                await ws.send(frame)

    async def drop(self) -> None:
        """Close every open connection (as a venue restarting its gateway would)."""
        for ws in list(self.connections):
            await ws.close(code=1012, reason="service restart")
