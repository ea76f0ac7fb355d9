"""Fixtures of the state-store integration tests: a throw-away table or namespace per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
import redis.asyncio as aioredis
from psycopg import sql


@pytest.fixture
async def pg_table(postgres_dsn: str) -> AsyncIterator[str]:
    """A table name nobody else uses; the table is dropped after the test."""
    table = f"vtest_{uuid.uuid4().hex[:20]}"
    yield table
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


@pytest.fixture
async def redis_namespace(redis_url: str) -> AsyncIterator[str]:
    """A namespace nobody else uses; its keys are deleted after the test."""
    namespace = f"vtest-{uuid.uuid4().hex}"
    yield namespace
    client = aioredis.Redis.from_url(redis_url)
    try:
        found = [k async for k in client.scan_iter(match=f"{{{namespace}}}:*", count=1000)]
        if found:
            await client.delete(*found)
    finally:
        await client.aclose()
