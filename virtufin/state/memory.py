"""In-memory state store: the reference adapter and the fastest one (one process only)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

from virtufin.errors import ConcurrencyError
from virtufin.state.port import StateItem, StateOp, StateStore

__all__ = ["MemoryStateStore"]


class MemoryStateStore(StateStore):
    """Values live in a dict; etags are a process-wide counter. Values are deep-copied in
    and out so that callers cannot change stored state by mutating what they passed or got."""

    name = "memory"

    def __init__(self) -> None:
        self._data: dict[str, tuple[Any, str]] = {}
        self._counter = itertools.count(1)

    def _check(self, key: str, etag: str | None) -> None:
        if etag is None:
            return
        current = self._data.get(key)
        if current is None or current[1] != etag:
            raise ConcurrencyError(key, etag)

    async def get(self, key: str) -> StateItem | None:
        found = self._data.get(key)
        if found is None:
            return None
        return StateItem(key, copy.deepcopy(found[0]), found[1])

    async def save(
        self, key: str, value: Any, *, etag: str | None = None, first_write: bool = False
    ) -> str:
        if first_write and key in self._data:
            raise ConcurrencyError(key, None)
        self._check(key, etag)
        new_etag = str(next(self._counter))
        self._data[key] = (copy.deepcopy(value), new_etag)
        return new_etag

    async def delete(self, key: str, *, etag: str | None = None) -> None:
        self._check(key, etag)
        self._data.pop(key, None)

    async def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self._data if k.startswith(prefix))

    async def transact(self, ops: Sequence[StateOp]) -> None:
        for op in ops:
            self._check(op.key, op.etag)
        for op in ops:
            if op.op == "save":
                self._data[op.key] = (copy.deepcopy(op.value), str(next(self._counter)))
            else:
                self._data.pop(op.key, None)
