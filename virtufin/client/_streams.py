"""Event streams: async iterators over a server stream, ready once the gateway subscribed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, NamedTuple, TypeVar

import grpc

from virtufin.client._errors import ClientError
from virtufin.envelope import Envelope

__all__ = ["READY_HEADER", "Event", "EventStream"]

READY_HEADER = "x-virtufin-subscribed"
_M = TypeVar("_M")


class Event(NamedTuple):
    """One received event: the concrete topic it arrived on and its envelope."""

    topic: str
    envelope: Envelope


class EventStream(Generic[_M]):
    """``async for event in stream`` over a gateway stream; ``await stream.aclose()`` ends it.

    `subscription_id` is the id the gateway gave the stream (for ``Pubsub.Unsubscribe``).
    The stream ends normally when the gateway ends it (unsubscribe, idle sweep, shutdown).
    """

    def __init__(self, call: Any, convert: Callable[[_M], Event], *, name: str) -> None:
        self._call = call
        self._convert = convert
        self._name = name
        self._iter: AsyncIterator[_M] | None = None
        self.subscription_id = ""

    async def ready(self) -> EventStream[_M]:
        """Wait until the gateway's bus subscription is live (events published later arrive).

        Raises:
            ClientError: the gateway refused the subscription.
        """
        try:
            metadata = await self._call.initial_metadata()
        except grpc.aio.AioRpcError as exc:
            raise ClientError(exc.code(), exc.details() or "", call=self._name) from exc
        for key, value in metadata or ():
            if key == READY_HEADER:
                self.subscription_id = str(value)
        if not self.subscription_id:
            # The stream ended before it began: surface the reason.
            code = await self._call.code()
            details = await self._call.details()
            raise ClientError(code, details or "stream ended before subscribing", call=self._name)
        return self

    def __aiter__(self) -> EventStream[_M]:
        return self

    async def __anext__(self) -> Event:
        if self._iter is None:
            self._iter = self._call.__aiter__()
        try:
            message = await self._iter.__anext__()
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.CANCELLED:
                raise StopAsyncIteration from None
            raise ClientError(exc.code(), exc.details() or "", call=self._name) from exc
        return self._convert(message)

    async def aclose(self) -> None:
        """Cancel the stream (idempotent)."""
        with contextlib.suppress(Exception):
            self._call.cancel()

    async def __aenter__(self) -> EventStream[_M]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
