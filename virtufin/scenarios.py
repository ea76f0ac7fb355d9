"""The scenario registry (docs/spec/scenarios.md) over any `StateStore`.

A scenario is a market/portfolio/strategy lane triplet stored at ``scenario.<id>``, listed in
``scenario.index``. ``LIVE`` is seeded once by every service and never changes. Events may be
published to ``sc.<id>.*`` only while the scenario is ``active``. Every write uses etags, so
two registries sharing a store never lose each other's updates.

Example:
    >>> registry = ScenarioRegistry(MemoryStateStore())          # doctest: +SKIP
    >>> await registry.register(Scenario.backtest("S1", selector="EQ_2008"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from virtufin import statekeys
from virtufin.errors import (
    ConcurrencyError,
    ScenarioError,
    ScenarioImmutableError,
    ScenarioInactiveError,
    ScenarioNotFoundError,
)
from virtufin.lanes import LIVE, Lane, is_valid_id
from virtufin.state.port import StateStore

__all__ = [
    "CACHE_TTL_SECONDS",
    "MarketLane",
    "PortfolioLane",
    "Scenario",
    "ScenarioRegistry",
    "ScenarioStatus",
    "StrategyLane",
]

CACHE_TTL_SECONDS: Final = 60.0
_MAX_CAS_RETRIES: Final = 50
log = logging.getLogger(__name__)


class ScenarioStatus(StrEnum):
    """Exactly Virtufin's four statuses."""

    ACTIVE = "active"
    PAUSED = "paused"
    ARCHIVED = "archived"
    DELETED = "deleted"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class MarketLane(_Model):
    """``act`` (no selector) or ``hyp`` with the data universe it replays."""

    lane: Lane
    selector: str | None = None

    @model_validator(mode="after")
    def _selector_rule(self) -> MarketLane:
        if self.lane is Lane.ACT and self.selector is not None:
            raise ValueError("act market lanes MUST NOT carry a selector")
        if self.lane is Lane.HYP:
            if self.selector is None:
                raise ValueError("hyp market lanes MUST carry a selector")
            if not is_valid_id(self.selector):
                raise ValueError("selector must match ^[A-Z0-9_]{1,32}$")
        return self


class PortfolioLane(_Model):
    lane: Lane


class StrategyLane(_Model):
    lane: Lane
    id: str | None = None


class Scenario(_Model):
    """One registry entry, stored with Virtufin's camelCase field names."""

    id: str
    scenario_name: str = Field(alias="scenarioName")
    status: ScenarioStatus = ScenarioStatus.ACTIVE
    market: MarketLane
    portfolio: PortfolioLane
    strategy: StrategyLane
    created_at: datetime | None = Field(default=None, alias="createdAt")
    updated_at: datetime | None = Field(default=None, alias="updatedAt")

    @model_validator(mode="after")
    def _id_rule(self) -> Scenario:
        if not is_valid_id(self.id):
            raise ValueError(f"scenario id {self.id!r} must match ^[A-Z0-9_]{{1,32}}$")
        return self

    @classmethod
    def live(cls) -> Scenario:
        """Production: act/act/act."""
        return cls(
            id=LIVE,
            scenarioName="Production",
            market=MarketLane(lane=Lane.ACT),
            portfolio=PortfolioLane(lane=Lane.ACT),
            strategy=StrategyLane(lane=Lane.ACT),
        )

    @classmethod
    def backtest(
        cls, scenario_id: str, *, selector: str, strategy_id: str | None = None, name: str = ""
    ) -> Scenario:
        """hyp/hyp/hyp on data universe `selector`."""
        return cls(
            id=scenario_id,
            scenarioName=name or f"Backtest {scenario_id}",
            market=MarketLane(lane=Lane.HYP, selector=selector),
            portfolio=PortfolioLane(lane=Lane.HYP),
            strategy=StrategyLane(lane=Lane.HYP, id=strategy_id),
        )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class ScenarioRegistry:
    """Register, look up, change status and delete scenarios through a `StateStore`.

    Args:
        store: where entries live.
        ttl_seconds: how long a looked-up entry is trusted (Virtufin: at most 60 s).
        clock: monotonic seconds, for the cache (injectable for tests).
        now: wall-clock time for `createdAt`/`updatedAt`.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        ttl_seconds: float = CACHE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not 0 <= ttl_seconds <= CACHE_TTL_SECONDS:
            raise ValueError("ttl_seconds must be between 0 and 60")
        self._store = store
        self._ttl = ttl_seconds
        self._clock = clock
        self._now = now
        self._cache: dict[str, tuple[float, Scenario | None]] = {}

    @property
    def store(self) -> StateStore:
        return self._store

    # ---------------------------------------------------------------- reads

    async def _load(self, scenario_id: str) -> tuple[Scenario | None, str | None]:
        item = await self._store.get(statekeys.scenario(scenario_id))
        if item is None:
            return None, None
        try:
            return Scenario.model_validate(item.value), item.etag
        except ValidationError as exc:
            raise ScenarioError(scenario_id, f"stored entry is corrupt ({exc})") from None

    async def get(self, scenario_id: str, *, fresh: bool = False) -> Scenario:
        """The entry, from the TTL cache unless `fresh`.

        Raises:
            ScenarioNotFoundError: no such id.
        """
        if not is_valid_id(scenario_id):
            raise ScenarioError(scenario_id, "ids must match ^[A-Z0-9_]{1,32}$")
        cached = self._cache.get(scenario_id)
        if not fresh and cached is not None and self._clock() - cached[0] < self._ttl:
            found = cached[1]
        else:
            found, _ = await self._load(scenario_id)
            self._cache[scenario_id] = (self._clock(), found)
        if found is None:
            raise ScenarioNotFoundError(scenario_id)
        return found

    def cached_status(self, scenario_id: str) -> ScenarioStatus | None:
        """The status if a fresh cache entry exists (sync, for the hot publish path)."""
        if scenario_id == LIVE:
            return ScenarioStatus.ACTIVE
        cached = self._cache.get(scenario_id)
        if cached is None or cached[1] is None or self._clock() - cached[0] >= self._ttl:
            return None
        return cached[1].status

    async def ensure_publishable(self, scenario_id: str) -> None:
        """Allow publishing to ``sc.<id>.*`` only for LIVE or an active scenario.

        Raises:
            ScenarioNotFoundError, ScenarioInactiveError.
        """
        if scenario_id == LIVE:
            return
        scenario = await self.get(scenario_id)
        if scenario.status is not ScenarioStatus.ACTIVE:
            raise ScenarioInactiveError(scenario_id, scenario.status.value)

    async def all(self, *, include_deleted: bool = False) -> list[Scenario]:
        """Every scenario in `scenario.index` order."""
        index = await self._store.get(statekeys.SCENARIO_INDEX)
        ids: list[str] = list(index.value) if index is not None else []
        out: list[Scenario] = []
        for sid in ids:
            found, _ = await self._load(sid)
            if found is not None and (include_deleted or found.status != ScenarioStatus.DELETED):
                out.append(found)
        return out

    # ---------------------------------------------------------------- writes

    async def _update_index(self, change: Callable[[list[str]], list[str]]) -> None:
        for _ in range(_MAX_CAS_RETRIES):
            item = await self._store.get(statekeys.SCENARIO_INDEX)
            ids = list(item.value) if item is not None else []
            new_ids = change(ids)
            if new_ids == ids and item is not None:
                return
            try:
                if item is None:
                    await self._store.save(statekeys.SCENARIO_INDEX, new_ids, first_write=True)
                else:
                    await self._store.save(statekeys.SCENARIO_INDEX, new_ids, etag=item.etag)
                return
            except ConcurrencyError:
                continue
        raise ScenarioError("*", "scenario.index is too contended; gave up")

    async def seed_live(self) -> Scenario:
        """Create ``scenario.LIVE`` if absent; never change it afterwards."""
        found, _ = await self._load(LIVE)
        if found is not None:
            return found
        stamp = self._now()
        live = Scenario.live().model_copy(update={"created_at": stamp, "updated_at": stamp})
        try:
            await self._store.save(statekeys.scenario(LIVE), live.to_json(), first_write=True)
        except ConcurrencyError:  # another service seeded it first: theirs stands
            found, _ = await self._load(LIVE)
            assert found is not None
            live = found
        await self._update_index(lambda ids: ids if LIVE in ids else [*ids, LIVE])
        self._cache[LIVE] = (self._clock(), live)
        return live

    async def register(self, scenario: Scenario, *, replace_existing: bool = False) -> Scenario:
        """Register a new scenario (status active).

        Raises:
            ScenarioImmutableError: the id is LIVE.
            ScenarioError: the id exists (unless `replace_existing` and it is not deleted).
        """
        if scenario.id == LIVE:
            raise ScenarioImmutableError(LIVE, "LIVE is reserved and cannot be registered")
        existing, etag = await self._load(scenario.id)
        if existing is not None:
            if existing.status is ScenarioStatus.DELETED:
                raise ScenarioImmutableError(scenario.id, "was deleted; ids are not reused")
            if not replace_existing:
                raise ScenarioError(scenario.id, "is already registered")
        stamp = self._now()
        created = existing.created_at if existing is not None else stamp
        entry = scenario.model_copy(
            update={"status": ScenarioStatus.ACTIVE, "created_at": created, "updated_at": stamp}
        )
        try:
            await self._store.save(
                statekeys.scenario(scenario.id),
                entry.to_json(),
                etag=etag,
                first_write=existing is None,
            )
        except ConcurrencyError:
            raise ScenarioError(scenario.id, "was registered concurrently") from None
        await self._update_index(lambda ids: ids if scenario.id in ids else [*ids, scenario.id])
        self._cache[scenario.id] = (self._clock(), entry)
        return entry

    async def set_status(self, scenario_id: str, status: ScenarioStatus) -> Scenario:
        """Move between active, paused and archived (delete with `delete`).

        Raises:
            ScenarioImmutableError: LIVE, a deleted scenario, or `status=deleted`.
        """
        if scenario_id == LIVE:
            raise ScenarioImmutableError(LIVE, "LIVE never changes")
        if status is ScenarioStatus.DELETED:
            raise ScenarioImmutableError(scenario_id, "use delete() to delete a scenario")
        for _ in range(_MAX_CAS_RETRIES):
            found, etag = await self._load(scenario_id)
            if found is None:
                raise ScenarioNotFoundError(scenario_id)
            if found.status is ScenarioStatus.DELETED:
                raise ScenarioImmutableError(scenario_id, "is deleted; deletion is irreversible")
            entry = found.model_copy(update={"status": status, "updated_at": self._now()})
            try:
                await self._store.save(statekeys.scenario(scenario_id), entry.to_json(), etag=etag)
            except ConcurrencyError:
                continue
            self._cache[scenario_id] = (self._clock(), entry)
            return entry
        raise ScenarioError(scenario_id, "too contended; gave up")

    async def delete(self, scenario_id: str, *, confirm: str) -> list[str]:
        """Virtufin's ordered delete; `confirm` must repeat the id. Returns purged keys.

        1. save with status=deleted; 2. remove the id from `scenario.index`;
        3. delete every ``sc.<id>.*`` key; 4. delete ``scenario.<id>``.
        """
        if scenario_id == LIVE:
            raise ScenarioImmutableError(LIVE, "LIVE cannot be deleted")
        if confirm != scenario_id:
            raise ScenarioError(scenario_id, "deletion needs confirm=<the same id>")
        log.warning("deleting scenario %s and every sc.%s.* key", scenario_id, scenario_id)
        for _ in range(_MAX_CAS_RETRIES):
            found, etag = await self._load(scenario_id)
            if found is None:
                raise ScenarioNotFoundError(scenario_id)
            entry = found.model_copy(
                update={"status": ScenarioStatus.DELETED, "updated_at": self._now()}
            )
            try:
                await self._store.save(statekeys.scenario(scenario_id), entry.to_json(), etag=etag)
                break
            except ConcurrencyError:
                continue
        self._cache[scenario_id] = (self._clock(), entry)
        await self._update_index(lambda ids: [i for i in ids if i != scenario_id])
        purged = await self._store.keys(statekeys.scenario_prefix(scenario_id))
        for key in purged:
            await self._store.delete(key)
        await self._store.delete(statekeys.scenario(scenario_id))
        self._cache[scenario_id] = (self._clock(), None)
        return purged
