"""PostgreSQL adapter beyond the contract: several instances (processes) on one table."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import psycopg
import pytest
from psycopg import sql

from virtufin.errors import ConcurrencyError, StateError
from virtufin.state.port import StateOp, StateStore
from virtufin.state.postgres import PostgresStateStore

pytestmark = pytest.mark.postgres


async def test_a_second_instance_sees_writes_and_etags(postgres_dsn: str, pg_table: str) -> None:
    async with (
        PostgresStateStore(postgres_dsn, table=pg_table) as one,
        PostgresStateStore(postgres_dsn, table=pg_table) as two,
    ):
        etag = await one.save("sc.S1.position.BTC", {"size": 1})
        item = await two.get("sc.S1.position.BTC")
        assert item is not None
        assert (item.value, item.etag) == ({"size": 1}, etag)
        newer = await two.save("sc.S1.position.BTC", {"size": 2}, etag=etag)
        with pytest.raises(ConcurrencyError):
            await one.save("sc.S1.position.BTC", {"size": 3}, etag=etag)
        assert await one.keys("sc.S1.") == ["sc.S1.position.BTC"]
        await one.delete("sc.S1.position.BTC", etag=newer)
        assert await two.get("sc.S1.position.BTC") is None


async def test_instances_racing_lose_no_update(postgres_dsn: str, pg_table: str) -> None:
    async with (
        PostgresStateStore(postgres_dsn, table=pg_table) as one,
        PostgresStateStore(postgres_dsn, table=pg_table) as two,
    ):
        await one.save("counter", 0)
        conflicts = 0

        async def increment(store: StateStore, times: int) -> None:
            nonlocal conflicts
            done = 0
            while done < times:
                item = await store.get("counter")
                assert item is not None
                try:
                    await store.save("counter", item.value + 1, etag=item.etag)
                    done += 1
                except ConcurrencyError:
                    conflicts += 1

        await asyncio.gather(*(increment(s, 25) for s in (one, two, one, two)))
        final = await two.get("counter")
    assert final is not None
    assert final.value == 100
    assert conflicts > 0


async def test_many_instances_create_the_table_at_once(postgres_dsn: str, pg_table: str) -> None:
    stores = [PostgresStateStore(postgres_dsn, table=pg_table) for _ in range(6)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        await stores[0].save("k", 1)
        assert [await s.keys() for s in stores] == [["k"]] * 6
    finally:
        for store in stores:
            await store.close()


async def test_prefix_listing_can_use_the_primary_key_index(
    postgres_dsn: str, pg_table: str
) -> None:
    async with PostgresStateStore(postgres_dsn, table=pg_table) as store:
        await store.save("sc.S1.x", 1)
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await conn.execute("SET enable_seqscan = off")
        query = sql.SQL("EXPLAIN SELECT key FROM {} WHERE key LIKE 'sc.S1.%' ORDER BY key")
        cur = await conn.execute(query.format(sql.Identifier(pg_table)))
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "Index Only Scan" in plan or "Index Scan" in plan, plan
    assert "Index Cond" in plan, plan  # the prefix bounds the scan; it is not just a filter


async def test_opposite_transactions_do_not_deadlock(postgres_dsn: str, pg_table: str) -> None:
    async with (
        PostgresStateStore(postgres_dsn, table=pg_table) as one,
        PostgresStateStore(postgres_dsn, table=pg_table) as two,
    ):
        for _ in range(20):
            await asyncio.gather(
                one.transact([StateOp("save", "a", 1), StateOp("save", "b", 1)]),
                two.transact([StateOp("save", "b", 2), StateOp("save", "a", 2)]),
            )
            items = await one.get_bulk(["a", "b"])
            assert items["a"].value == items["b"].value  # one transaction or the other, whole


@pytest.mark.parametrize("value", [{1, 2}, math.nan, object()])
async def test_a_value_that_is_not_json_is_refused(
    postgres_dsn: str, pg_table: str, value: Any
) -> None:
    async with PostgresStateStore(postgres_dsn, table=pg_table) as store:
        with pytest.raises(StateError, match="not JSON"):
            await store.save("k", value)
        assert await store.get("k") is None


@pytest.mark.parametrize("table", ["", "Upper", "semi;colon", "x" * 64, "1abc"])
def test_unsafe_table_names_are_refused(table: str) -> None:
    with pytest.raises(ValueError, match="table"):
        PostgresStateStore("postgresql://unused", table=table)


async def test_a_closed_store_refuses_calls(postgres_dsn: str, pg_table: str) -> None:
    store = PostgresStateStore(postgres_dsn, table=pg_table)
    await store.save("k", 1)
    await store.close()
    with pytest.raises(StateError, match="closed"):
        await store.get("k")
