"""Redis state store: a hash per key, a sorted-set index, every write one Lua script.

Layout under namespace ``ns``: ``{ns}:s:<key>`` is a hash with fields ``v`` (the JSON text) and
``e`` (the etag); ``{ns}:keys`` is a sorted set of every key, all scores 0, so ``keys(prefix)``
is one ``ZRANGEBYLEX`` in byte order (= code-point order, as `sorted`) and never scans the
database. The ``{ns}`` hash tag puts all of a namespace in one cluster slot, which the
multi-key scripts need. Scripts run atomically, so an etag check and its write cannot be
separated by another client; etags are random, made by the caller of the script.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import redis.asyncio as aioredis

from virtufin.errors import ConcurrencyError, StateError
from virtufin.state._codec import EtagSource, dumps
from virtufin.state.port import StateItem, StateOp, StateStore

__all__ = ["DEFAULT_NAMESPACE", "RedisStateStore"]

DEFAULT_NAMESPACE: Final = "virtufin"

# KEYS: item hash, index. ARGV: key, value, new etag, mode (a=any, e=etag, f=first), expected.
_SAVE: Final = """
local current = redis.call('HGET', KEYS[1], 'e')
if (ARGV[4] == 'f' and current) or (ARGV[4] == 'e' and current ~= ARGV[5]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'e', ARGV[3])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"""

# KEYS: item hash, index. ARGV: key, mode (a=any, e=etag), expected.
_DELETE: Final = """
if ARGV[2] == 'e' and redis.call('HGET', KEYS[1], 'e') ~= ARGV[3] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: index, then one item hash per op. ARGV: 6 per op: kind (s/d), key, value,
# check (1/0), expected etag, new etag. Returns 0, or the 1-based op whose etag is stale.
_TRANSACT: Final = """
local n = #KEYS - 1
for i = 1, n do
  local b = (i - 1) * 6
  if ARGV[b + 4] == '1' and redis.call('HGET', KEYS[i + 1], 'e') ~= ARGV[b + 5] then
    return i
  end
end
for i = 1, n do
  local b = (i - 1) * 6
  if ARGV[b + 1] == 's' then
    redis.call('HSET', KEYS[i + 1], 'v', ARGV[b + 3], 'e', ARGV[b + 6])
    redis.call('ZADD', KEYS[1], 0, ARGV[b + 2])
  else
    redis.call('DEL', KEYS[i + 1])
    redis.call('ZREM', KEYS[1], ARGV[b + 2])
  end
end
return 0
"""


def _text(reply: bytes | str) -> str:
    """Replies are `str` (the client decodes them); the typing of redis-py allows bytes too."""
    return reply if isinstance(reply, str) else reply.decode()


def _item_of(key: str, value: bytes | str | None, etag: bytes | str | None) -> StateItem | None:
    if value is None or etag is None:
        return None
    return StateItem(key, json.loads(value), _text(etag))


class RedisStateStore(StateStore):
    """State in Redis (or Valkey) under one namespace.

    Args:
        url: a ``redis://`` URL.
        namespace: prefix of every Redis key this store owns; stores sharing it share state.

    Example:
        >>> store = RedisStateStore("redis://127.0.0.1:6379/0")  # doctest: +SKIP
        >>> etag = await store.save("k", [1, 2])                 # doctest: +SKIP
    """

    name = "redis"

    def __init__(self, url: str, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        if not namespace:
            raise ValueError("namespace must not be empty")
        self._namespace = namespace
        self._client: aioredis.Redis = aioredis.Redis.from_url(url, decode_responses=True)
        self._index = f"{{{namespace}}}:keys"
        self._save = self._client.register_script(_SAVE)
        self._delete = self._client.register_script(_DELETE)
        self._transact = self._client.register_script(_TRANSACT)
        self._closed = False
        self._new_etag = EtagSource()

    @property
    def namespace(self) -> str:
        return self._namespace

    def _ensure_open(self, key: str) -> None:
        if self._closed:  # redis-py would silently reconnect
            raise StateError(key, "the state store is closed")

    def _item(self, key: str) -> str:
        self._ensure_open(key)
        return f"{{{self._namespace}}}:s:{key}"

    async def open(self) -> None:
        """Check the server answers now (otherwise the first call finds out)."""
        self._ensure_open("")
        await self._client.ping()

    async def get(self, key: str) -> StateItem | None:
        value, etag = await self._client.hmget(self._item(key), ["v", "e"])
        return _item_of(key, value, etag)

    async def get_bulk(self, keys: Sequence[str]) -> dict[str, StateItem]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        async with self._client.pipeline(transaction=True) as pipe:
            for key in wanted:
                pipe.hmget(self._item(key), ["v", "e"])
            rows = await pipe.execute()
        items = (_item_of(key, *row) for key, row in zip(wanted, rows, strict=True))
        return {item.key: item for item in items if item is not None}

    async def save(
        self, key: str, value: Any, *, etag: str | None = None, first_write: bool = False
    ) -> str:
        if first_write and etag is not None:  # absent → the etag is stale; present → not first
            raise ConcurrencyError(key, etag)
        new_etag = self._new_etag()
        mode = "f" if first_write else ("a" if etag is None else "e")
        args = [key, dumps(key, value), new_etag, mode, etag or ""]
        if not await self._save(keys=[self._item(key), self._index], args=args):
            raise ConcurrencyError(key, etag)
        return new_etag

    async def delete(self, key: str, *, etag: str | None = None) -> None:
        args = [key, "a" if etag is None else "e", etag or ""]
        if not await self._delete(keys=[self._item(key), self._index], args=args):
            raise ConcurrencyError(key, etag)

    async def keys(self, prefix: str = "") -> list[str]:
        self._ensure_open(prefix)
        if not prefix:
            found = await self._client.zrangebylex(self._index, "-", "+")
        else:
            raw = prefix.encode()
            # No UTF-8 byte is 0xFF, so "(prefix\xff" bounds exactly the keys with the prefix.
            found = await self._client.zrangebylex(self._index, b"[" + raw, b"(" + raw + b"\xff")
        return [_text(key) for key in found]

    async def transact(self, ops: Sequence[StateOp]) -> None:
        if not ops:
            return
        args: list[str] = []
        for op in ops:
            value = dumps(op.key, op.value) if op.op == "save" else ""
            check = "0" if op.etag is None else "1"
            kind = "s" if op.op == "save" else "d"
            args += [kind, op.key, value, check, op.etag or "", self._new_etag()]
        keys = [self._index, *(self._item(op.key) for op in ops)]
        stale = int(await self._transact(keys=keys, args=args))
        if stale:
            op = ops[stale - 1]
            raise ConcurrencyError(op.key, op.etag)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.aclose()
