"""The state-store port: get/save/delete with etags, bulk get, prefix listing, transactions.

Semantics (Virtufin's State API): omitting an etag means last write wins; a stale etag raises
`ConcurrencyError`. Values are JSON values; an etag is an opaque string that changes on every
write.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["StateItem", "StateOp", "StateStore"]


@dataclass(frozen=True, slots=True)
class StateItem:
    """A stored value and the etag it was stored under."""

    key: str
    value: Any
    etag: str


@dataclass(frozen=True, slots=True)
class StateOp:
    """One operation of a transaction."""

    op: Literal["save", "delete"]
    key: str
    value: Any = None
    etag: str | None = None


class StateStore(ABC):
    """Base class of every state adapter.

    | method      | required | notes                                             |
    |-------------|----------|---------------------------------------------------|
    | get         | yes      | `None` when the key is absent                      |
    | save        | yes      | new etag; stale etag, or first_write on an     |
    |             |          | existing key → ConcurrencyError                    |
    | delete      | yes      | stale etag → ConcurrencyError; absent key is a no-op |
    | keys        | yes      | keys starting with a prefix, sorted               |
    | transact    | yes      | all-or-nothing where the backend can              |
    | get_bulk    | no       | default: one `get` per key                        |
    | close       | no       | release connections                               |
    """

    name: str = "abstract"

    @abstractmethod
    async def get(self, key: str) -> StateItem | None:
        raise NotImplementedError("StateStore.get")

    @abstractmethod
    async def save(
        self, key: str, value: Any, *, etag: str | None = None, first_write: bool = False
    ) -> str:
        """Store `value`; with `first_write`, fail with `ConcurrencyError` if the key exists."""
        raise NotImplementedError("StateStore.save")

    @abstractmethod
    async def delete(self, key: str, *, etag: str | None = None) -> None:
        raise NotImplementedError("StateStore.delete")

    @abstractmethod
    async def keys(self, prefix: str = "") -> list[str]:
        raise NotImplementedError("StateStore.keys")

    @abstractmethod
    async def transact(self, ops: Sequence[StateOp]) -> None:
        raise NotImplementedError("StateStore.transact")

    async def get_bulk(self, keys: Sequence[str]) -> dict[str, StateItem]:
        """Items of the keys that exist."""
        out: dict[str, StateItem] = {}
        for key in keys:
            item = await self.get(key)
            if item is not None:
                out[key] = item
        return out

    async def close(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release connections."""

    async def __aenter__(self) -> StateStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
