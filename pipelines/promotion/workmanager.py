"""Desired deployments: what the promotion job asks the WorkManager to run.

The in-process client records them in the state store, one JSON record per deployment at
``workmanager.desired.<id>`` (beside the WorkManager's own ``workmanager.worker.<id>`` worker
records, which keep their service-owned shape); a WorkManager reconciles its workers towards
them. A deployment's id names the worker, the ladder step and the version's digest, e.g.
``sma_cross-live-1A2B3C4D``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from virtufin.state.port import StateStore

__all__ = [
    "DESIRED_PREFIX",
    "Deployment",
    "desired_key",
    "list_desired",
    "record_desired_deployment",
]

DESIRED_PREFIX: Final = "workmanager.desired."
Step = Literal["paper", "shadow", "LIVE"]


class Deployment(BaseModel):
    """One worker version on one set of lanes, and whether it should run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    worker: str
    version: str
    params: dict[str, Any] = Field(default_factory=dict)
    step: Step
    scenario: str = Field(description="the scenario whose lanes it runs on (LIVE for live)")
    lanes: dict[str, str] = Field(description="market, portfolio and strategy lanes")
    candidate: str = Field(description="the backtest scenario the version was promoted from")
    desired: Literal["running", "stopped"] = "running"
    reason: str = ""
    updated_at: str = ""
    runid: str = ""

    @classmethod
    def make_id(cls, worker: str, step: str, candidate: str) -> str:
        return f"{worker}-{step.lower()}-{candidate.rsplit('_', 1)[-1]}"


def desired_key(deployment_id: str) -> str:
    """``workmanager.desired.<id>``."""
    return f"{DESIRED_PREFIX}{deployment_id}"


async def record_desired_deployment(store: StateStore, deployment: Deployment) -> Deployment:
    """Store (replace) a deployment record, stamped with the time; return what was stored."""
    stamped = deployment.model_copy(
        update={"updated_at": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
    )
    await store.save(desired_key(deployment.id), stamped.model_dump(mode="json"))
    return stamped


async def list_desired(store: StateStore) -> list[Deployment]:
    """Every recorded deployment, by id."""
    keys = await store.keys(DESIRED_PREFIX)
    items = await store.get_bulk(keys)
    return [Deployment.model_validate(items[k].value) for k in keys if k in items]
