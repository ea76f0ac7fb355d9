"""A store wrapper that announces every write on ``state-changes``, as Virtufin's gateway does.

Each successful save or delete publishes ``{"service", "key", "action", "value"?}`` (type
``com.virtufin.gateway.state.changed``), so that clients can follow state without polling. The
event is published after the write commits: a failed or refused write announces nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from virtufin import topics
from virtufin.envelope import Envelope
from virtufin.state.port import StateItem, StateOp, StateStore

__all__ = ["ObservedStateStore", "Publish"]

Publish = Callable[[str, Envelope], Awaitable[None]]
"""``(topic, envelope) -> None``, the shape of `EventBus.publish`."""


class ObservedStateStore(StateStore):
    """Wrap `inner`; publish a ``state-changes`` event after every successful save or delete.

    Reads pass straight through. A delete is announced even when the key was absent, since the
    call succeeded (as Virtufin's ``DeleteState``). If `publish` raises, the write has already
    happened; the error reaches the caller so that a lost announcement is never silent.

    Args:
        inner: the store that holds the state.
        publish: where events go, e.g. ``bus.publish``.
        service: the service namespacing the state (its name in `services.json`).
        include_value: put the saved value in the event (Virtufin's ``include_value``).

    Example:
        >>> store = ObservedStateStore(MemoryStateStore(), bus.publish, service="gateway")
    """

    def __init__(
        self,
        inner: StateStore,
        publish: Publish,
        *,
        service: str,
        include_value: bool = False,
    ) -> None:
        self._inner = inner
        self._publish = publish
        self._service = service
        self._source = topics.source_urn(service)
        self._include_value = include_value
        self.name = inner.name

    @property
    def inner(self) -> StateStore:
        return self._inner

    async def _announce(self, key: str, action: Literal["save", "delete"], value: Any) -> None:
        data: dict[str, Any] = {"service": self._service, "key": key, "action": action}
        if action == "save" and self._include_value:
            data["value"] = value
        event = Envelope.new(
            type=topics.EventTypes.STATE_CHANGE, source=self._source, data=data, subject=key
        )
        await self._publish(topics.STATE_CHANGES, event)

    async def get(self, key: str) -> StateItem | None:
        return await self._inner.get(key)

    async def get_bulk(self, keys: Sequence[str]) -> dict[str, StateItem]:
        return await self._inner.get_bulk(keys)

    async def keys(self, prefix: str = "") -> list[str]:
        return await self._inner.keys(prefix)

    async def save(
        self, key: str, value: Any, *, etag: str | None = None, first_write: bool = False
    ) -> str:
        # Snapshot first: the event must carry what was saved, whatever the caller does next.
        saved = copy.deepcopy(value) if self._include_value else None
        new_etag = await self._inner.save(key, value, etag=etag, first_write=first_write)
        await self._announce(key, "save", saved)
        return new_etag

    async def delete(self, key: str, *, etag: str | None = None) -> None:
        await self._inner.delete(key, etag=etag)
        await self._announce(key, "delete", None)

    async def transact(self, ops: Sequence[StateOp]) -> None:
        """Announce each op, in order, once the whole transaction has committed."""
        saved = [copy.deepcopy(op.value) if self._include_value else None for op in ops]
        await self._inner.transact(ops)
        for op, value in zip(ops, saved, strict=True):
            await self._announce(op.key, op.op, value)

    async def close(self) -> None:
        await self._inner.close()
