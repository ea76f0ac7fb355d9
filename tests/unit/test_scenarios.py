"""The scenario registry's rules, on the in-memory store (the contract suite runs it on every
adapter): LIVE seeded and immutable, id rules, statuses, TTL cache, the ordered delete."""

from __future__ import annotations

import logging

import pytest

from virtufin import statekeys
from virtufin.errors import (
    ScenarioError,
    ScenarioImmutableError,
    ScenarioInactiveError,
    ScenarioNotFoundError,
)
from virtufin.scenarios import Scenario, ScenarioRegistry, ScenarioStatus
from virtufin.state import MemoryStateStore, StateItem


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(clock: Clock) -> ScenarioRegistry:
    return ScenarioRegistry(MemoryStateStore(), clock=clock)


async def test_live_is_seeded_once_and_never_changes(registry: ScenarioRegistry) -> None:
    first = await registry.seed_live()
    again = await registry.seed_live()
    assert first == again
    assert (first.market.lane, first.portfolio.lane, first.strategy.lane) == ("act",) * 3
    with pytest.raises(ScenarioImmutableError, match="LIVE is reserved"):
        await registry.register(Scenario.live())
    with pytest.raises(ScenarioImmutableError, match="LIVE never changes"):
        await registry.set_status("LIVE", ScenarioStatus.PAUSED)
    with pytest.raises(ScenarioImmutableError, match="LIVE cannot be deleted"):
        await registry.delete("LIVE", confirm="LIVE")
    await registry.ensure_publishable("LIVE")


async def test_registered_scenarios_start_active_and_are_listed(registry: ScenarioRegistry) -> None:
    await registry.seed_live()
    entry = await registry.register(Scenario.backtest("BT_1", selector="EQ_2008_2009"))
    assert entry.status is ScenarioStatus.ACTIVE
    assert entry.created_at is not None
    assert [s.id for s in await registry.all()] == ["LIVE", "BT_1"]
    stored = await registry.store.get(statekeys.scenario("BT_1"))
    assert isinstance(stored, StateItem)
    assert stored.value["scenarioName"] == "Backtest BT_1"
    assert stored.value["market"] == {"lane": "hyp", "selector": "EQ_2008_2009"}
    with pytest.raises(ScenarioError, match="already registered"):
        await registry.register(Scenario.backtest("BT_1", selector="EQ"))


@pytest.mark.parametrize("bad", ["bt-1", "lower", "", "X" * 33])
def test_scenario_ids_follow_the_id_rule(bad: str) -> None:
    with pytest.raises(ValueError, match=r"must match"):
        Scenario.backtest(bad, selector="EQ")


def test_lane_triplets_follow_the_selector_rule() -> None:
    with pytest.raises(ValueError, match="hyp market lanes MUST carry a selector"):
        Scenario.model_validate(
            {
                "id": "S",
                "scenarioName": "s",
                "market": {"lane": "hyp"},
                "portfolio": {"lane": "hyp"},
                "strategy": {"lane": "hyp"},
            }
        )
    with pytest.raises(ValueError, match="act market lanes MUST NOT carry a selector"):
        Scenario.model_validate(
            {
                "id": "S",
                "scenarioName": "s",
                "market": {"lane": "act", "selector": "EQ"},
                "portfolio": {"lane": "hyp"},
                "strategy": {"lane": "hyp"},
            }
        )


async def test_only_active_scenarios_are_publishable(registry: ScenarioRegistry) -> None:
    await registry.register(Scenario.backtest("S1", selector="EQ"))
    await registry.ensure_publishable("S1")
    await registry.set_status("S1", ScenarioStatus.PAUSED)
    with pytest.raises(ScenarioInactiveError, match="is paused"):
        await registry.ensure_publishable("S1")
    await registry.set_status("S1", ScenarioStatus.ARCHIVED)
    with pytest.raises(ScenarioInactiveError, match="is archived"):
        await registry.ensure_publishable("S1")
    with pytest.raises(ScenarioNotFoundError):
        await registry.ensure_publishable("NOPE")


async def test_lookups_are_cached_for_the_ttl(clock: Clock) -> None:
    store = MemoryStateStore()
    reader = ScenarioRegistry(store, clock=clock, ttl_seconds=60)
    writer = ScenarioRegistry(store, clock=clock)
    await writer.register(Scenario.backtest("S1", selector="EQ"))
    await reader.ensure_publishable("S1")
    await writer.set_status("S1", ScenarioStatus.PAUSED)
    clock.now = 59.0
    await reader.ensure_publishable("S1")  # still trusts its cached entry
    assert reader.cached_status("S1") is ScenarioStatus.ACTIVE
    clock.now = 60.0
    assert reader.cached_status("S1") is None
    with pytest.raises(ScenarioInactiveError):
        await reader.ensure_publishable("S1")
    with pytest.raises(ValueError, match="between 0 and 60"):
        ScenarioRegistry(store, ttl_seconds=61)


async def test_delete_runs_the_four_steps_in_order(
    registry: ScenarioRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    store = registry.store
    await registry.seed_live()
    await registry.register(Scenario.backtest("S1", selector="EQ"))
    await store.save(statekeys.order("S1", "o1"), {"status": "filled"})
    await store.save(statekeys.position("S1", "AAA"), {"size": 1})
    await store.save(statekeys.order("S10", "o1"), {"status": "other scenario"})
    with pytest.raises(ScenarioError, match="confirm"):
        await registry.delete("S1", confirm="S2")
    with caplog.at_level(logging.WARNING):
        purged = await registry.delete("S1", confirm="S1")
    assert purged == [statekeys.position("S1", "AAA"), statekeys.order("S1", "o1")]
    assert "deleting scenario S1" in caplog.text
    assert await store.get(statekeys.scenario("S1")) is None
    assert await store.get(statekeys.order("S10", "o1")) is not None
    index = await store.get(statekeys.SCENARIO_INDEX)
    assert index is not None
    assert index.value == ["LIVE"]
    with pytest.raises(ScenarioNotFoundError):
        await registry.get("S1")


async def test_a_deleted_id_is_not_reused(registry: ScenarioRegistry) -> None:
    store = registry.store
    await registry.register(Scenario.backtest("S1", selector="EQ"))
    entry = await store.get(statekeys.scenario("S1"))
    assert entry is not None
    # step 1 done, crash before step 4: the tombstone blocks re-registration and changes
    await store.save(statekeys.scenario("S1"), {**entry.value, "status": "deleted"})
    with pytest.raises(ScenarioImmutableError, match="ids are not reused"):
        await registry.register(Scenario.backtest("S1", selector="EQ"))
    with pytest.raises(ScenarioImmutableError, match="irreversible"):
        await registry.set_status("S1", ScenarioStatus.ACTIVE)
    await registry.delete("S1", confirm="S1")  # the delete can be finished
    assert await store.get(statekeys.scenario("S1")) is None
