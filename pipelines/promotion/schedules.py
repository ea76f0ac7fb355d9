"""Promotion jobs: climb the ladder for one scenario, or roll a strategy's LIVE version back.

`promote` materialises, for one scenario partition, the data window, the backtest and the three
evidence assets in one run, so every blocking check (bad data, worker errors, each step's gates)
stops everything after it. `rollback` restores the previous LIVE version of a strategy from the
promotion log. Neither is scheduled: promotion is a decision someone launches.
"""

from typing import Any, Final

import dagster as dg
from pydantic import Field

from pipelines.backtest.assets import BACKTEST_RESULTS, MARKET_DATA_WINDOW
from pipelines.promotion.assets import BACKTEST_EVIDENCE, PAPER_EVIDENCE, SHADOW_EVIDENCE
from pipelines.promotion.log import append_entry, audit_envelope, read_log
from pipelines.promotion.resources import WorkManagerClient
from pipelines.promotion.workmanager import Deployment
from pipelines.resources import EventBusResource, StateStoreResource
from virtufin import topics
from virtufin.lanes import LIVE

__all__ = [
    "PROMOTE_JOB",
    "ROLLBACK_JOB",
    "RollbackConfig",
    "live_history",
    "promote_job",
    "rollback_job",
]

PROMOTE_JOB: Final = "promote"
#: the queued run coordinator runs one of these at a time (infra/dagster/dagster.yaml)
PROMOTION_TAGS: Final = {"virtufin/concurrency": "promotion"}
ROLLBACK_JOB: Final = "rollback"

promote_job = dg.define_asset_job(
    PROMOTE_JOB,
    selection=dg.AssetSelection.assets(
        MARKET_DATA_WINDOW, BACKTEST_RESULTS, BACKTEST_EVIDENCE, PAPER_EVIDENCE, SHADOW_EVIDENCE
    ),
    description="Move a scenario's strategy version up backtest → paper → shadow → LIVE.",
    tags=PROMOTION_TAGS,
)


class RollbackConfig(dg.Config):
    """Which strategy's LIVE version to roll back, and why."""

    strategy: str = Field(description="worker name whose LIVE version is rolled back")
    reason: str = Field(default="manual rollback", description="recorded in the promotion log")


def live_history(entries: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
    """The LIVE deployments of `strategy` as a stack (oldest first), replayed from the log.

    A ``promoted`` entry to LIVE pushes its deployment; a ``rolled_back`` entry pops the
    version it retired, so the top is the version LIVE now and the one below it the previous.
    """
    stack: list[dict[str, Any]] = []
    for entry in entries:
        if entry.get("strategy") != strategy or entry.get("to") != LIVE:
            continue
        if entry.get("decision") == "promoted":
            stack = [d for d in stack if d["id"] != entry["deployment"]["id"]]
            stack.append(entry["deployment"])
        elif entry.get("decision") == "rolled_back" and stack:
            stack.pop()
    return stack


@dg.op(description="Restore the previous LIVE version of a strategy and retire the current one.")
def restore_previous_live(
    context: dg.OpExecutionContext,
    config: RollbackConfig,
    state: StateStoreResource,
    workmanager: WorkManagerClient,
    bus: EventBusResource,
) -> dict[str, Any]:
    stack = live_history(state.run(read_log), config.strategy)
    if len(stack) < 2:
        raise dg.Failure(
            f"{config.strategy} has no previous LIVE version to roll back to "
            f"({len(stack)} LIVE version(s) in the promotion log)"
        )
    current = Deployment.model_validate(stack[-1])
    previous = Deployment.model_validate(stack[-2])
    restored = workmanager.deploy(previous.model_copy(update={"runid": context.run.run_id}))
    retired = workmanager.retire(current, reason=f"rolled back: {config.reason}")
    entry = {
        "strategy": config.strategy,
        "version": restored.version,
        "parameters": restored.params,
        "scenario": restored.candidate,
        "from": LIVE,
        "to": LIVE,
        "decision": "rolled_back",
        "checks": [],
        "runid": context.run.run_id,
        "deployment": restored.model_dump(mode="json"),
        "retired": [retired.id],
        "reason": config.reason,
    }
    stored = state.run(lambda store: append_entry(store, entry))
    bus.publish(topics.PROMOTION_AUDIT, audit_envelope(stored))
    context.log.info(f"LIVE {config.strategy}: {retired.id} → {restored.id}")
    return stored


@dg.job(
    name=ROLLBACK_JOB,
    description="Roll a strategy's LIVE version back to the previous one.",
    tags=PROMOTION_TAGS,
)
def rollback_job() -> None:
    restore_previous_live()
