"""The code location: one `Definitions` merging the ingestion, backtest and promotion domains.

Global pieces are added here: the resources of the deployment (`resources_for`), the executor
(multiprocess locally, `k8s_job_executor` in production: each step its own pod) and the
automation sensor that makes backtests follow new market data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import dagster as dg

from pipelines import backtest, ingestion, promotion
from pipelines.ingestion.partitions import Universe
from pipelines.resources import resources_for
from virtufin.config import Settings, load_settings

__all__ = ["AUTOMATION_SENSOR", "build_defs", "defs", "executor_for"]

AUTOMATION_SENSOR: Final = "virtufin_automation"
#: Steps inherit image, env config maps, secrets and volumes from the K8sRunLauncher's config
#: (infra/dagster/dagster.yaml, Helm values); only the fan-out limit is set here.
K8S_EXECUTOR_CONFIG: Final = {"max_concurrent": 8}


def executor_for(deployment: str) -> dg.ExecutorDefinition:
    """``production``: one Kubernetes Job per step; otherwise one process per step."""
    if deployment == "production":
        from dagster_k8s import k8s_job_executor

        configured: dg.ExecutorDefinition = k8s_job_executor.configured(K8S_EXECUTOR_CONFIG)
        return configured
    local: dg.ExecutorDefinition = dg.multiprocess_executor.configured({"max_concurrent": 2})
    return local


def build_defs(
    *,
    universe: Universe | None = None,
    settings: Settings | None = None,
    resources: Mapping[str, Any] | None = None,
) -> dg.Definitions:
    """The whole code location (defaults: universe and settings from the environment)."""
    settings = settings or load_settings()
    universe = universe or Universe.from_env()
    automation = dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description="Backtests follow new bars (eager) and new scenario partitions.",
    )
    return dg.Definitions.merge(
        ingestion.build_definitions(universe),
        backtest.build_definitions(),
        promotion.build_definitions(),
        dg.Definitions(
            resources=dict(resources) if resources is not None else resources_for(settings),
            executor=executor_for(settings.deployment),
            sensors=[automation],
        ),
    )


defs = build_defs()
