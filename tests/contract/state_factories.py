"""One factory per state adapter for `test_state_contract.py`: a new adapter is one more line.

A factory takes the test's `pytest.FixtureRequest` (to reach `tmp_path`, `postgres_dsn`, …)
and returns an async context manager yielding a fresh, empty store that is cleaned up on exit:
postgres gets its own table, dropped afterwards; redis its own namespace, deleted afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis
from psycopg import sql

from virtufin.state.memory import MemoryStateStore
from virtufin.state.port import StateStore
from virtufin.state.postgres import PostgresStateStore
from virtufin.state.redis import RedisStateStore
from virtufin.state.sqlite import SqliteStateStore

__all__ = [
    "STATE_FACTORIES",
    "STATE_MARKS",
    "StateFactory",
    "drop_postgres_table",
    "drop_redis_namespace",
]

StateFactory = Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[StateStore]]


async def drop_postgres_table(dsn: str, table: str) -> None:
    """Remove a test table."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


async def drop_redis_namespace(url: str, namespace: str) -> None:
    """Remove every Redis key of a test namespace (a SCAN is fine for cleaning up tests)."""
    client = aioredis.Redis.from_url(url)
    try:
        found = [key async for key in client.scan_iter(match=f"{{{namespace}}}:*", count=1000)]
        if found:
            await client.delete(*found)
    finally:
        await client.aclose()


@asynccontextmanager
async def memory_store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    async with MemoryStateStore() as store:
        yield store


@asynccontextmanager
async def sqlite_store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    async with SqliteStateStore(tmp_path / "state.sqlite3") as store:
        yield store


@asynccontextmanager
async def postgres_store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    dsn: str = request.getfixturevalue("postgres_dsn")
    table = f"vtest_{uuid.uuid4().hex[:20]}"
    store = PostgresStateStore(dsn, table=table)
    try:
        await store.open()
        yield store
    finally:
        await store.close()
        await drop_postgres_table(dsn, table)


@asynccontextmanager
async def redis_store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    url: str = request.getfixturevalue("redis_url")
    namespace = f"vtest-{uuid.uuid4().hex}"
    store = RedisStateStore(url, namespace=namespace)
    try:
        await store.open()
        yield store
    finally:
        await store.close()
        await drop_redis_namespace(url, namespace)


@asynccontextmanager
async def dapr_store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    from standins.dapr_sidecar_standin import DaprSidecarStandIn  # no daprd here: DESIGN §5

    from virtufin.state.dapr import DaprStateStore

    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    async with DaprSidecarStandIn() as sidecar:
        for name, value in sidecar.environ().items():  # the SDK's health check goes there
            monkeypatch.setenv(name, value)
        store = DaprStateStore(store_name="statestore", dapr_address=sidecar.address)
        try:
            yield store
        finally:
            await store.close()


STATE_FACTORIES: dict[str, StateFactory] = {
    "memory": memory_store,
    "sqlite": sqlite_store,
    "postgres": postgres_store,
    "redis": redis_store,
    "dapr": dapr_store,
}

#: Server markers of the adapters that need one (pyproject's markers); others need none.
STATE_MARKS: dict[str, tuple[pytest.MarkDecorator, ...]] = {
    "postgres": (pytest.mark.postgres,),
    "redis": (pytest.mark.redis,),
}
