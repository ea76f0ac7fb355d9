"""Redis adapter beyond the contract: several instances, namespaces, the key index."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from virtufin.errors import ConcurrencyError, StateError
from virtufin.state.port import StateOp, StateStore
from virtufin.state.redis import RedisStateStore

pytestmark = pytest.mark.redis


async def test_a_second_instance_sees_writes_and_etags(
    redis_url: str, redis_namespace: str
) -> None:
    async with (
        RedisStateStore(redis_url, namespace=redis_namespace) as one,
        RedisStateStore(redis_url, namespace=redis_namespace) as two,
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


async def test_instances_racing_lose_no_update(redis_url: str, redis_namespace: str) -> None:
    async with (
        RedisStateStore(redis_url, namespace=redis_namespace) as one,
        RedisStateStore(redis_url, namespace=redis_namespace) as two,
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


async def test_namespaces_do_not_see_each_other(redis_url: str, redis_namespace: str) -> None:
    other_ns = f"{redis_namespace}-other"
    async with (
        RedisStateStore(redis_url, namespace=redis_namespace) as mine,
        RedisStateStore(redis_url, namespace=other_ns) as theirs,
    ):
        try:
            await mine.save("k", "mine")
            await theirs.save("k", "theirs")
            await theirs.save("k.only.theirs", 1)
            item = await mine.get("k")
            assert item is not None
            assert item.value == "mine"
            assert await mine.keys("k") == ["k"]
            await theirs.delete("k")
            assert await mine.get("k") is not None
        finally:
            await theirs.delete("k.only.theirs")


async def test_the_index_tracks_keys_in_one_cluster_slot(
    redis_url: str, redis_namespace: str
) -> None:
    async with RedisStateStore(redis_url, namespace=redis_namespace) as store:
        await store.save("a.1", 1)
        await store.transact([StateOp("save", "a.2", 2), StateOp("save", "b.1", 3)])
        await store.delete("a.1")
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        index = await raw.zrange(f"{{{redis_namespace}}}:keys", 0, -1)
        stored = [k async for k in raw.scan_iter(match=f"{{{redis_namespace}}}:*")]
    finally:
        await raw.aclose()
    assert index == ["a.2", "b.1"]
    assert sorted(stored) == sorted(
        f"{{{redis_namespace}}}:{suffix}" for suffix in ("keys", "s:a.2", "s:b.1")
    )
    assert len({key_slot(k.encode()) for k in stored}) == 1  # multi-key scripts work in a cluster


@pytest.mark.parametrize("value", [{1, 2}, math.nan, object()])
async def test_a_value_that_is_not_json_is_refused(
    redis_url: str, redis_namespace: str, value: Any
) -> None:
    async with RedisStateStore(redis_url, namespace=redis_namespace) as store:
        with pytest.raises(StateError, match="not JSON"):
            await store.save("k", value)
        assert await store.get("k") is None


def test_an_empty_namespace_is_refused() -> None:
    with pytest.raises(ValueError, match="namespace"):
        RedisStateStore("redis://127.0.0.1:6379/0", namespace="")


async def test_a_closed_store_refuses_calls(redis_url: str, redis_namespace: str) -> None:
    store = RedisStateStore(redis_url, namespace=redis_namespace)
    await store.save("k", 1)
    await store.close()
    with pytest.raises(StateError, match="closed"):
        await store.get("k")
    with pytest.raises(StateError, match="closed"):
        await store.keys()
