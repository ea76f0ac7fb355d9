"""The state-store contract: every adapter in `STATE_FACTORIES` must behave as the memory one."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virtufin import statekeys, topics
from virtufin.envelope import Envelope
from virtufin.errors import (
    ConcurrencyError,
    ScenarioError,
    ScenarioImmutableError,
    ScenarioInactiveError,
    ScenarioNotFoundError,
)
from virtufin.lanes import LIVE
from virtufin.scenarios import Scenario, ScenarioRegistry, ScenarioStatus
from virtufin.state.observed import ObservedStateStore
from virtufin.state.port import StateOp, StateStore

from .state_factories import STATE_FACTORIES, STATE_MARKS

NESTED: dict[str, Any] = {
    "order": {"qty": 3, "price": 101.25, "side": "buy", "tags": ["a", "b"], "fill": None},
    "flags": [True, False, None],
    "big": 2**62,
    "neg": -7,
    "float": -0.5e-7,
    "text": 'ünïcødé ✓ 🚀 "quoted" back\\slash \u0000 nul',
    "empty": {"list": [], "dict": {}, "str": ""},
    "deep": [[[[{"x": [1, [2, [3]]]}]]]],
}


@pytest.fixture(
    params=[pytest.param(name, marks=STATE_MARKS.get(name, ())) for name in STATE_FACTORIES]
)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    async with STATE_FACTORIES[request.param](request) as opened:
        yield opened


# ------------------------------------------------------------------ get / save


async def test_get_of_an_absent_key_is_none(store: StateStore) -> None:
    assert await store.get("nothing.here") is None


async def test_nested_json_round_trips_with_the_etag_save_returned(store: StateStore) -> None:
    etag = await store.save("doc.1", NESTED)
    item = await store.get("doc.1")
    assert item is not None
    assert (item.key, item.value, item.etag) == ("doc.1", NESTED, etag)
    assert isinstance(etag, str)
    assert etag


@pytest.mark.parametrize("value", [None, 0, 1.5, "", "text", [], {}, [None], False])
async def test_top_level_json_scalars_and_empties_round_trip(store: StateStore, value: Any) -> None:
    await store.save("scalar", value)
    item = await store.get("scalar")
    assert item is not None  # a stored null is not an absent key
    assert item.value == value
    assert type(item.value) is type(value)


async def test_stored_values_are_not_shared_with_the_caller(store: StateStore) -> None:
    value = {"list": [1, 2]}
    await store.save("iso", value)
    value["list"].append(3)
    first = await store.get("iso")
    assert first is not None
    first.value["list"].append(4)
    again = await store.get("iso")
    assert again is not None
    assert again.value == {"list": [1, 2]}


async def test_every_write_changes_the_etag(store: StateStore) -> None:
    etags = [await store.save("k", n) for n in range(3)]
    etags.append(await store.save("k", 2, etag=etags[-1]))
    await store.delete("k")
    etags.append(await store.save("k", 2))
    assert len(set(etags)) == len(etags)


async def test_a_stale_etag_is_refused_and_the_value_is_unchanged(store: StateStore) -> None:
    first = await store.save("k", {"v": 1})
    second = await store.save("k", {"v": 2}, etag=first)
    with pytest.raises(ConcurrencyError) as caught:
        await store.save("k", {"v": 3}, etag=first)
    assert caught.value.key == "k"
    item = await store.get("k")
    assert item is not None
    assert (item.value, item.etag) == ({"v": 2}, second)


async def test_an_etag_on_an_absent_key_is_refused(store: StateStore) -> None:
    other = await store.save("other", 1)
    with pytest.raises(ConcurrencyError):
        await store.save("absent", 1, etag=other)
    assert await store.get("absent") is None


async def test_without_an_etag_the_last_write_wins(store: StateStore) -> None:
    await store.save("k", "first")
    await store.save("k", "second")
    item = await store.get("k")
    assert item is not None
    assert item.value == "second"


async def test_first_write_succeeds_once(store: StateStore) -> None:
    etag = await store.save("once", 1, first_write=True)
    with pytest.raises(ConcurrencyError):
        await store.save("once", 2, first_write=True)
    item = await store.get("once")
    assert item is not None
    assert (item.value, item.etag) == (1, etag)
    await store.delete("once")
    await store.save("once", 3, first_write=True)


async def test_first_write_with_an_etag_is_always_refused(store: StateStore) -> None:
    etag = await store.save("both", 1)
    with pytest.raises(ConcurrencyError):
        await store.save("both", 2, etag=etag, first_write=True)
    with pytest.raises(ConcurrencyError):
        await store.save("fresh", 2, etag=etag, first_write=True)
    assert await store.get("fresh") is None


# ------------------------------------------------------------------ delete


async def test_delete_with_a_stale_etag_is_refused(store: StateStore) -> None:
    first = await store.save("k", 1)
    second = await store.save("k", 2)
    with pytest.raises(ConcurrencyError):
        await store.delete("k", etag=first)
    item = await store.get("k")
    assert item is not None
    assert item.value == 2
    await store.delete("k", etag=second)
    assert await store.get("k") is None


async def test_delete_of_an_absent_key_is_a_no_op(store: StateStore) -> None:
    await store.delete("never.saved")
    assert await store.get("never.saved") is None
    assert await store.keys() == []


async def test_delete_of_an_absent_key_with_an_etag_is_refused(store: StateStore) -> None:
    etag = await store.save("k", 1)
    await store.delete("k")
    with pytest.raises(ConcurrencyError):
        await store.delete("k", etag=etag)


# ------------------------------------------------------------------ keys / bulk

KEYS = [
    "a_b",
    "a_b.1",
    "a%b.1",
    "aXb.1",
    "axb",
    "A_b.x",
    "a\\b",
    "ab",
    "sc.S1.position.BTC",
    "sc.S10.position.ETH",
    "sc.S1.trading.order.o-1",
    "é.1",
    "\uffff.x",
    "🚀.y",
]


async def test_keys_by_prefix_are_sorted_and_exact(store: StateStore) -> None:
    for key in KEYS:
        await store.save(key, key)
    assert await store.keys() == sorted(KEYS)
    assert await store.keys("a_b") == ["a_b", "a_b.1"]
    assert await store.keys("a%") == ["a%b.1"]
    assert await store.keys("a\\") == ["a\\b"]
    assert await store.keys("A") == ["A_b.x"]
    assert await store.keys("sc.S1.") == ["sc.S1.position.BTC", "sc.S1.trading.order.o-1"]
    assert await store.keys("é") == ["é.1"]
    assert await store.keys("\uffff") == ["\uffff.x"]
    assert await store.keys("🚀") == ["🚀.y"]
    assert await store.keys("zzz") == []
    await store.delete("a_b")
    assert await store.keys("a_b") == ["a_b.1"]


async def test_get_bulk_returns_only_present_keys(store: StateStore) -> None:
    etags = {key: await store.save(key, {"k": key}) for key in ("b.1", "b.2", "b.3")}
    found = await store.get_bulk(["b.3", "missing", "b.1", "b.1"])
    assert set(found) == {"b.1", "b.3"}
    for key, item in found.items():
        assert (item.key, item.value, item.etag) == (key, {"k": key}, etags[key])
    assert await store.get_bulk([]) == {}


# ------------------------------------------------------------------ transactions


async def test_transact_applies_saves_and_deletes(store: StateStore) -> None:
    etag = await store.save("t.1", "old")
    await store.save("t.2", "doomed")
    await store.transact(
        [
            StateOp("save", "t.1", "new", etag=etag),
            StateOp("delete", "t.2"),
            StateOp("save", "t.3", {"n": 3}),
            StateOp("delete", "t.never"),
        ]
    )
    assert await store.keys("t.") == ["t.1", "t.3"]
    one = await store.get("t.1")
    assert one is not None
    assert one.value == "new"
    assert one.etag != etag
    three = await store.get("t.3")
    assert three is not None
    assert three.value == {"n": 3}


async def test_transact_with_one_stale_etag_applies_nothing(store: StateStore) -> None:
    fresh = await store.save("t.fresh", 1)
    stale = await store.save("t.stale", 1)
    current = await store.save("t.stale", 2)
    with pytest.raises(ConcurrencyError) as caught:
        await store.transact(
            [
                StateOp("save", "t.fresh", 10, etag=fresh),
                StateOp("save", "t.new", 10),
                StateOp("delete", "t.stale", etag=stale),
            ]
        )
    assert caught.value.key == "t.stale"
    items = await store.get_bulk(["t.fresh", "t.new", "t.stale"])
    assert {k: (i.value, i.etag) for k, i in items.items()} == {
        "t.fresh": (1, fresh),
        "t.stale": (2, current),
    }


async def test_transact_later_ops_on_a_key_win(store: StateStore) -> None:
    await store.transact([StateOp("save", "t.k", 1), StateOp("save", "t.k", 2)])
    item = await store.get("t.k")
    assert item is not None
    assert item.value == 2
    await store.transact([StateOp("save", "t.k", 3), StateOp("delete", "t.k")])
    assert await store.get("t.k") is None
    await store.transact([])


# ------------------------------------------------------------------ concurrency


async def test_racing_writers_with_etags_lose_no_update(store: StateStore) -> None:
    await store.save("race.counter", 0)
    successes = conflicts = 0

    async def increment() -> None:
        nonlocal successes, conflicts
        while True:
            item = await store.get("race.counter")
            assert item is not None
            await asyncio.sleep(0)  # let the other writers read the same version
            try:
                await store.save("race.counter", item.value + 1, etag=item.etag)
            except ConcurrencyError:
                conflicts += 1
                continue
            successes += 1
            return

    rounds, writers = 50, 4
    for _ in range(rounds):
        await asyncio.gather(*(increment() for _ in range(writers)))
    final = await store.get("race.counter")
    assert final is not None
    assert final.value == successes == rounds * writers
    assert conflicts > 0  # the writers really raced


# ------------------------------------------------------------------ property

_KEY_NUMBERS = itertools.count()
_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=_JSON)
async def test_any_json_value_round_trips(store: StateStore, value: Any) -> None:
    key = f"prop.{next(_KEY_NUMBERS)}"  # one store serves every example: fresh key each
    await store.save(key, value)
    item = await store.get(key)
    assert item is not None
    assert item.value == value


# ------------------------------------------------------------------ scenario registry


async def test_scenario_registry_full_lifecycle(store: StateStore) -> None:
    registry = ScenarioRegistry(store, ttl_seconds=0)  # no cache: every read hits the store
    live = await registry.seed_live()
    live_item = await store.get(statekeys.scenario(LIVE))
    assert live_item is not None
    assert await ScenarioRegistry(store, ttl_seconds=0).seed_live() == live  # idempotent
    index = await store.get(statekeys.SCENARIO_INDEX)
    assert index is not None
    assert index.value == [LIVE]

    s1 = await registry.register(Scenario.backtest("S1", selector="EQ_2008"))
    await registry.register(Scenario.backtest("S10", selector="EQ_2008"))
    assert s1.status is ScenarioStatus.ACTIVE
    assert await registry.get("S1") == s1
    with pytest.raises(ScenarioError):
        await registry.register(Scenario.backtest("S1", selector="EQ_2008"))
    await registry.ensure_publishable("S1")
    await registry.ensure_publishable(LIVE)

    paused = await registry.set_status("S1", ScenarioStatus.PAUSED)
    assert paused.status is ScenarioStatus.PAUSED
    assert await registry.get("S1") == paused
    with pytest.raises(ScenarioInactiveError):
        await registry.ensure_publishable("S1")
    await registry.set_status("S1", ScenarioStatus.ACTIVE)
    await registry.ensure_publishable("S1")

    with pytest.raises(ScenarioImmutableError):
        await registry.set_status(LIVE, ScenarioStatus.PAUSED)
    with pytest.raises(ScenarioImmutableError):
        await registry.register(Scenario.live())
    with pytest.raises(ScenarioImmutableError):
        await registry.delete(LIVE, confirm=LIVE)

    owned = [
        statekeys.order("S1", "o-1"),
        statekeys.position("S1", "BTCUSDT"),
        statekeys.portfolio("S1"),
    ]
    for key in owned:
        await store.save(key, {"owner": "S1"})
    neighbour = statekeys.position("S10", "ETHUSDT")  # "sc.S10." must survive "sc.S1."
    await store.save(neighbour, {"owner": "S10"})

    with pytest.raises(ScenarioError):
        await registry.delete("S1", confirm="S10")
    purged = await registry.delete("S1", confirm="S1")
    assert sorted(purged) == sorted(owned)
    assert await store.keys(statekeys.scenario_prefix("S1")) == []
    assert await store.get(statekeys.scenario("S1")) is None
    assert await store.keys(statekeys.scenario_prefix("S10")) == [neighbour]
    index = await store.get(statekeys.SCENARIO_INDEX)
    assert index is not None
    assert index.value == [LIVE, "S10"]
    with pytest.raises(ScenarioNotFoundError):
        await registry.ensure_publishable("S1")
    assert [s.id for s in await registry.all()] == [LIVE, "S10"]

    live_after = await store.get(statekeys.scenario(LIVE))
    assert live_after == live_item  # same value and etag: LIVE never changed


# ------------------------------------------------------------------ observed


async def test_observed_store_announces_each_successful_write(store: StateStore) -> None:
    events: list[tuple[str, Envelope]] = []

    async def publish(topic: str, envelope: Envelope) -> None:
        events.append((topic, envelope))

    observed = ObservedStateStore(store, publish, service="gateway", include_value=True)
    value = {"qty": 1}
    etag = await observed.save("o.1", value)
    value["qty"] = 99  # the event keeps what was saved
    with pytest.raises(ConcurrencyError):
        await observed.save("o.1", {"qty": 2}, etag="stale")
    with pytest.raises(ConcurrencyError):
        await observed.transact([StateOp("save", "o.2", 1, etag="stale")])
    assert await observed.get("o.1") is not None
    assert await observed.keys("o.") == ["o.1"]
    await observed.delete("o.1", etag=etag)
    await observed.transact([StateOp("save", "o.2", [2]), StateOp("delete", "o.3")])

    def payload(key: str, action: str, *value: Any) -> dict[str, Any]:
        data: dict[str, Any] = {"service": "gateway", "key": key, "action": action}
        return data | ({"value": value[0]} if value else {})

    assert [(t, e.data) for t, e in events] == [
        (topics.STATE_CHANGES, payload("o.1", "save", {"qty": 1})),
        (topics.STATE_CHANGES, payload("o.1", "delete")),
        (topics.STATE_CHANGES, payload("o.2", "save", [2])),
        (topics.STATE_CHANGES, payload("o.3", "delete")),
    ]
    for _, envelope in events:
        envelope.validate()
        assert envelope.type == topics.EventTypes.STATE_CHANGE
        assert envelope.source == topics.source_urn("gateway")
        assert envelope.subject == envelope.data["key"]
    assert len({e.id for _, e in events}) == len(events)


async def test_observed_store_leaves_out_values_unless_asked(store: StateStore) -> None:
    events: list[Envelope] = []

    async def publish(topic: str, envelope: Envelope) -> None:
        events.append(envelope)

    async with ObservedStateStore(store, publish, service="workmanager") as observed:
        await observed.save("w.1", {"status": "up"})
        assert [e.data for e in events] == [
            {"service": "workmanager", "key": "w.1", "action": "save"}
        ]
        assert events[0].source == "urn:com.virtufin.workmanager"
