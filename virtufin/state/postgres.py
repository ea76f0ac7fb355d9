"""PostgreSQL state store: one table, etag checks inside SQL statements, real transactions.

The value column is ``json``, not ``jsonb``: ``json`` keeps the text as written, so values come
back exactly as saved (object key order, ``"\\u0000"`` in strings), as in the memory store;
``jsonb`` would reorder keys and refuse NUL characters. Keys are ``text COLLATE "C"`` so that
``ORDER BY`` is code-point order (Python's `sorted`) and ``LIKE 'prefix%'`` can use the primary
key index.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from virtufin.errors import ConcurrencyError, StateError
from virtufin.state._codec import EtagSource, dumps
from virtufin.state.port import StateItem, StateOp, StateStore

__all__ = ["DEFAULT_POOL_SIZE", "DEFAULT_TABLE", "PostgresStateStore"]

DEFAULT_TABLE: Final = "virtufin_state"
DEFAULT_POOL_SIZE: Final = 4
_TABLE_RE: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_Conn = psycopg.AsyncConnection[tuple[Any, ...]]


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching exactly the strings that start with `prefix`."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class _Queries:
    """Every statement, composed once for one table."""

    def __init__(self, table: str) -> None:
        def q(text: str) -> str:
            return sql.SQL(text).format(t=sql.Identifier(table)).as_string(None)

        self.create = q(
            'CREATE TABLE IF NOT EXISTS {t} (key text COLLATE "C" PRIMARY KEY,'
            " value json NOT NULL, etag text NOT NULL)"
        )
        self.get = q("SELECT value, etag FROM {t} WHERE key = %s")
        self.get_bulk = q("SELECT key, value, etag FROM {t} WHERE key = ANY(%s)")
        self.upsert = q(
            "INSERT INTO {t} (key, value, etag) VALUES (%s, %s::json, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, etag = EXCLUDED.etag"
        )
        self.insert_new = q(
            "INSERT INTO {t} (key, value, etag) VALUES (%s, %s::json, %s)"
            " ON CONFLICT (key) DO NOTHING"
        )
        self.update_if = q(
            "UPDATE {t} SET value = %s::json, etag = %s WHERE key = %s AND etag = %s"
        )
        self.delete = q("DELETE FROM {t} WHERE key = %s")
        self.delete_if = q("DELETE FROM {t} WHERE key = %s AND etag = %s")
        self.keys = q("SELECT key FROM {t} WHERE key LIKE %s ORDER BY key")
        self.lock = q("SELECT key, etag FROM {t} WHERE key = ANY(%s) ORDER BY key FOR UPDATE")


class PostgresStateStore(StateStore):
    """State in one PostgreSQL table, created on first use.

    Connections are a small pool of autocommit connections (at most `pool_size`), so that tasks
    run queries in parallel and a `transact` owns its connection for the whole transaction.
    A connection that broke or was cancelled mid-query is closed, not reused.

    Args:
        dsn: a libpq connection string or URL.
        table: the table name (lower-case letters, digits, ``_``).
        pool_size: the most connections open at once.

    Example:
        >>> store = PostgresStateStore("postgresql://postgres@127.0.0.1/db")  # doctest: +SKIP
        >>> await store.open()                                                 # doctest: +SKIP
    """

    name = "postgres"

    def __init__(
        self, dsn: str, *, table: str = DEFAULT_TABLE, pool_size: int = DEFAULT_POOL_SIZE
    ) -> None:
        if not _TABLE_RE.match(table):
            raise ValueError(f"table {table!r} must match {_TABLE_RE.pattern}")
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self._dsn = dsn
        self._table = table
        self._q = _Queries(table)
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[_Conn] = []
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._closed = False
        self._new_etag = EtagSource()

    @property
    def table(self) -> str:
        return self._table

    # ---------------------------------------------------------------- plumbing

    async def open(self) -> None:
        """Connect and create the table now (otherwise the first call does it)."""
        async with self._connection(""):
            pass

    async def _create_table(self, conn: _Conn) -> None:
        # Two processes racing on CREATE TABLE IF NOT EXISTS can both try to create the row
        # type; an advisory lock on the table name makes the creation one at a time.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._table,))
            await conn.execute(self._q.create)

    @asynccontextmanager
    async def _connection(self, key: str) -> AsyncIterator[_Conn]:
        if self._closed:
            raise StateError(key, "the state store is closed")
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            try:
                if not self._ready:
                    async with self._ready_lock:
                        if not self._ready:
                            await self._create_table(conn)
                            self._ready = True
                yield conn
            finally:
                reusable = (
                    not self._closed
                    and not conn.closed
                    and conn.info.transaction_status == TransactionStatus.IDLE
                )
                if reusable:
                    self._idle.append(conn)
                else:
                    await conn.close()

    # ---------------------------------------------------------------- port

    async def get(self, key: str) -> StateItem | None:
        async with self._connection(key) as conn:
            cur = await conn.execute(self._q.get, (key,))
            row = await cur.fetchone()
        return None if row is None else StateItem(key, row[0], row[1])

    async def get_bulk(self, keys: Sequence[str]) -> dict[str, StateItem]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        async with self._connection(wanted[0]) as conn:
            cur = await conn.execute(self._q.get_bulk, (wanted,))
            rows = await cur.fetchall()
        found = {k: StateItem(k, v, e) for k, v, e in rows}
        return {k: found[k] for k in wanted if k in found}

    async def save(
        self, key: str, value: Any, *, etag: str | None = None, first_write: bool = False
    ) -> str:
        if first_write and etag is not None:  # absent → the etag is stale; present → not first
            raise ConcurrencyError(key, etag)
        text = dumps(key, value)
        new_etag = self._new_etag()
        async with self._connection(key) as conn:
            if first_write:
                cur = await conn.execute(self._q.insert_new, (key, text, new_etag))
            elif etag is None:
                cur = await conn.execute(self._q.upsert, (key, text, new_etag))
            else:
                cur = await conn.execute(self._q.update_if, (text, new_etag, key, etag))
        if cur.rowcount == 0:
            raise ConcurrencyError(key, etag)
        return new_etag

    async def delete(self, key: str, *, etag: str | None = None) -> None:
        async with self._connection(key) as conn:
            if etag is None:
                await conn.execute(self._q.delete, (key,))
                return
            cur = await conn.execute(self._q.delete_if, (key, etag))
        if cur.rowcount == 0:
            raise ConcurrencyError(key, etag)

    async def keys(self, prefix: str = "") -> list[str]:
        async with self._connection(prefix) as conn:
            cur = await conn.execute(self._q.keys, (_like_prefix(prefix),))
            rows = await cur.fetchall()
        return [row[0] for row in rows]

    async def transact(self, ops: Sequence[StateOp]) -> None:
        """Lock and check every etag, then apply; keys are written in sorted order so that
        concurrent transactions never deadlock (the last op on a key decides, as in memory)."""
        if not ops:
            return
        final: dict[str, tuple[StateOp, str]] = {}
        for op in ops:
            text = dumps(op.key, op.value) if op.op == "save" else ""
            final.pop(op.key, None)
            final[op.key] = (op, text)
        checked = [op for op in ops if op.etag is not None]
        async with self._connection(ops[0].key) as conn, conn.transaction():
            if checked:
                cur = await conn.execute(self._q.lock, (sorted({op.key for op in checked}),))
                current: dict[str, str] = {k: e for k, e in await cur.fetchall()}
                for op in checked:
                    if current.get(op.key) != op.etag:
                        raise ConcurrencyError(op.key, op.etag)
            for key in sorted(final):
                op, text = final[key]
                if op.op == "save":
                    await conn.execute(self._q.upsert, (key, text, self._new_etag()))
                else:
                    await conn.execute(self._q.delete, (key,))

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
