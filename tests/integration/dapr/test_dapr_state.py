"""DaprStateStore against the sidecar stand-in: the Dapr calls, etags, the key index.

The shared behaviour is in ``tests/contract/test_state_contract.py``; these tests look at what
reaches Dapr and at the parts only this adapter has (the index, the read-back etag).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from standins.dapr_sidecar_standin import DaprSidecarStandIn

from virtufin.errors import ConcurrencyError, StateError
from virtufin.state.dapr import INDEX_KEY, DaprStateStore
from virtufin.state.port import StateOp


async def test_a_save_stores_json_bytes_and_returns_daprs_etag(
    store: DaprStateStore, sidecar: DaprSidecarStandIn
) -> None:
    etag = await store.save("sc.LIVE.position.BTCUSDT", {"qty": 2, "avg": 101.5})
    value, stored_etag = sidecar.state()["sc.LIVE.position.BTCUSDT"]
    assert json.loads(value) == {"qty": 2, "avg": 101.5}
    assert etag == stored_etag


async def test_a_stale_etag_is_aborted_by_dapr_and_becomes_a_concurrency_error(
    store: DaprStateStore, sidecar: DaprSidecarStandIn
) -> None:
    first = await store.save("k", 1)
    await store.save("k", 2, etag=first)
    with pytest.raises(ConcurrencyError) as caught:
        await store.save("k", 3, etag=first)
    assert (caught.value.key, caught.value.expected_etag) == ("k", first)
    assert json.loads(sidecar.state()["k"][0]) == 2


async def test_first_write_on_an_existing_key_is_refused(
    store: DaprStateStore, sidecar: DaprSidecarStandIn
) -> None:
    await store.save("once", 1, first_write=True)
    with pytest.raises(ConcurrencyError):
        await store.save("once", 2, first_write=True)
    assert json.loads(sidecar.state()["once"][0]) == 1


async def test_a_key_written_around_the_index_is_not_overwritten_by_first_write(
    store: DaprStateStore, sidecar: DaprSidecarStandIn
) -> None:
    sidecar.stores["statestore"].items["foreign"] = (b'"theirs"', "900")
    with pytest.raises(ConcurrencyError):
        await store.save("foreign", "ours", first_write=True)
    await store.save("foreign", "ours")  # a plain save takes it over, and lists it
    assert await store.keys() == ["foreign"]


async def test_a_transaction_with_a_stale_etag_is_refused_whole(
    store: DaprStateStore, sidecar: DaprSidecarStandIn
) -> None:
    stale = await store.save("t.a", 1)
    await store.save("t.a", 2)
    before = sidecar.state()
    calls = len(sidecar.state_calls)
    with pytest.raises(ConcurrencyError) as caught:
        await store.transact([StateOp("save", "t.b", 1), StateOp("delete", "t.a", etag=stale)])
    assert caught.value.key == "t.a"
    assert sidecar.state() == before
    assert "ExecuteStateTransaction" in sidecar.state_calls[calls:]


async def test_a_transaction_updates_the_index_atomically(
    store: DaprStateStore, sidecar: DaprSidecarStandIn
) -> None:
    await store.save("t.old", 0)
    await store.transact(
        [StateOp("save", "t.new", {"n": 1}), StateOp("delete", "t.old"), StateOp("save", "u", 2)]
    )
    index = json.loads(sidecar.state()[INDEX_KEY][0])
    assert index == ["t.new", "u"]
    assert await store.keys("t.") == ["t.new"]


async def test_the_index_key_is_reserved(store: DaprStateStore) -> None:
    with pytest.raises(StateError, match="reserved"):
        await store.save(INDEX_KEY, [])
    with pytest.raises(StateError, match="reserved"):
        await store.get(INDEX_KEY)
    assert INDEX_KEY not in await store.keys()


async def test_updating_a_listed_key_does_not_touch_the_index(
    store: DaprStateStore, sidecar: DaprSidecarStandIn
) -> None:
    await store.save("hot", 0)
    index_etag = sidecar.state()[INDEX_KEY][1]
    for n in range(1, 5):
        await store.save("hot", n)
    assert sidecar.state()[INDEX_KEY][1] == index_etag


async def test_writers_creating_keys_at_once_all_get_listed(sidecar: DaprSidecarStandIn) -> None:
    stores = [
        DaprStateStore(store_name="statestore", dapr_address=sidecar.address) for _ in range(3)
    ]
    try:
        await asyncio.gather(
            *(s.save(f"w{n}.k{i}", i) for n, s in enumerate(stores) for i in range(15))
        )
        await asyncio.gather(*(s.delete(f"w{n}.k0") for n, s in enumerate(stores)))
        expected = sorted(f"w{n}.k{i}" for n in range(3) for i in range(1, 15))
        assert await stores[0].keys() == expected
    finally:
        for s in stores:
            await s.close()


async def test_a_delete_that_raced_a_save_is_repaired_by_the_save(
    store: DaprStateStore, sidecar: DaprSidecarStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete unlisting the key between the save's index read and its SaveState."""
    await store.save("raced", 1)
    component = sidecar.stores["statestore"]
    plain_set = component.set

    def set_then_unlist(item: Any) -> None:
        plain_set(item)
        if item.key == "raced":
            component.items[INDEX_KEY] = (b"[]", "after-the-delete")

    monkeypatch.setattr(component, "set", set_then_unlist)
    etag = await store.save("raced", 2)
    assert await store.keys() == ["raced"]
    item = await store.get("raced")
    assert item is not None
    assert (item.value, item.etag) == (2, etag)


async def test_a_save_overtaken_by_another_writer_returns_an_etag_that_matches_nothing(
    store: DaprStateStore, sidecar: DaprSidecarStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.save("contended", 1)
    component = sidecar.stores["statestore"]
    plain_set = component.set

    def set_then_overtake(item: Any) -> None:
        plain_set(item)
        if item.key == "contended":
            component.items["contended"] = (b"99", "someone-else")

    monkeypatch.setattr(component, "set", set_then_overtake)
    etag = await store.save("contended", 2)
    monkeypatch.setattr(component, "set", plain_set)
    with pytest.raises(ConcurrencyError):
        await store.save("contended", 3, etag=etag)
    item = await store.get("contended")
    assert item is not None
    assert (item.value, item.etag) == (99, "someone-else")


async def test_an_unknown_store_is_a_state_error(sidecar: DaprSidecarStandIn) -> None:
    async with DaprStateStore(store_name="nosuch", dapr_address=sidecar.address) as store:
        with pytest.raises(StateError, match="state store nosuch is not found"):
            await store.get("k")


async def test_values_that_are_not_json_are_refused(store: DaprStateStore) -> None:
    with pytest.raises(StateError, match="not JSON"):
        await store.save("bad", {"x": float("nan")})
    with pytest.raises(StateError, match="not JSON"):
        await store.save("bad", object())


async def test_a_sidecar_that_goes_away_is_a_state_error(
    store: DaprStateStore, sidecar: DaprSidecarStandIn
) -> None:
    await store.save("k", 1)
    await sidecar.stop()
    with pytest.raises(StateError, match="UNAVAILABLE"):
        await store.get("k")
    with pytest.raises(StateError):
        await store.save("k", 2)


async def test_a_sidecar_that_never_gets_healthy_is_a_state_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DAPR_HTTP_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", "1")
    async with DaprStateStore(store_name="statestore", dapr_address="127.0.0.1:9") as store:
        with pytest.raises(StateError, match="health check timed out"):
            await store.get("k")
