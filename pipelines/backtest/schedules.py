"""Backtest jobs: one scenario per run, and the parameter sweep that fans out into many.

`parameter_sweep` registers one scenario per (symbol × parameter combination) — worker
parameters are checked against the worker's manifest schema first, so an impossible combination
(e.g. ``fast >= slow``) is skipped with a log line instead of failing a run later — and adds
their partitions. The partitions are new, so the automation sensor requests a `backtest` run
for each (``newly_missing``); each run is its own process locally (multiprocess executor under
the default run launcher) and its own pod on a cluster (`K8sRunLauncher`, `k8s_job_executor`).
"""

import itertools
from datetime import date
from typing import Final

import dagster as dg
from pydantic import Field

from pipelines.backtest.assets import BACKTEST_RESULTS, MARKET_DATA_WINDOW
from pipelines.backtest.partitions import add_scenario_partitions
from pipelines.backtest.specs import BacktestSpec, manifest_version, register_specs
from pipelines.ingestion.partitions import BARS_START_DATE, DEFAULT_SYMBOLS
from pipelines.resources import StateStoreResource
from virtufin.errors import VirtufinError
from virtufin.marketdata import DEFAULT_SELECTOR

__all__ = [
    "BACKTEST_JOB",
    "PARAMETER_SWEEP_JOB",
    "SweepConfig",
    "backtest_job",
    "expand_sweep",
    "parameter_sweep_job",
]

BACKTEST_JOB: Final = "backtest"
PARAMETER_SWEEP_JOB: Final = "parameter_sweep"

backtest_job = dg.define_asset_job(
    BACKTEST_JOB,
    selection=dg.AssetSelection.assets(MARKET_DATA_WINDOW, BACKTEST_RESULTS),
    description="Check a scenario's data window and backtest it.",
)


class SweepConfig(dg.Config):
    """A parameter sweep: every combination of `param_grid`, for every symbol."""

    worker: str = Field(default="sma_cross", description="bundled worker name or module:Class")
    version: str = Field(default="", description="worker version (default: its manifest's)")
    param_grid: dict[str, list[int]] = Field(
        default_factory=lambda: {"fast": [5, 10, 20], "slow": [20, 50, 100]},
        description="parameter name → values; the sweep takes the cartesian product",
    )
    selector: str = Field(default=DEFAULT_SELECTOR, description="data universe")
    symbols: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SYMBOLS), description="one scenario per symbol"
    )
    start: str = Field(default=BARS_START_DATE, description="first date, YYYY-MM-DD")
    end: str = Field(default="2024-12-31", description="last date, YYYY-MM-DD")
    commission_rate: float = Field(default=0.0, description="fraction of traded value per fill")


def expand_sweep(config: SweepConfig) -> tuple[list[BacktestSpec], list[str]]:
    """The specs of a sweep and a note for each skipped (invalid) combination."""
    from virtufin.backtest.hosting import resolve_strategy
    from workers.kit.params import validate_params

    schema = resolve_strategy(config.worker).params_schema
    version = config.version or manifest_version(config.worker)
    names = sorted(config.param_grid)
    specs: list[BacktestSpec] = []
    skipped: list[str] = []
    for values in itertools.product(*(config.param_grid[n] for n in names)):
        params = dict(zip(names, values, strict=True))
        try:
            validate_params(schema, params, worker_id=config.worker)
        except VirtufinError as exc:
            skipped.append(f"{params}: {exc}")
            continue
        for symbol in config.symbols:
            specs.append(
                BacktestSpec(
                    worker=config.worker,
                    version=version,
                    params=params,
                    selector=config.selector,
                    symbols=(symbol,),
                    start=date.fromisoformat(config.start),
                    end=date.fromisoformat(config.end),
                    commission_rate=config.commission_rate,
                )
            )
    return specs, skipped


@dg.op(description="Register the sweep's scenarios and add their partitions.")
def register_sweep(
    context: dg.OpExecutionContext, config: SweepConfig, state: StateStoreResource
) -> list[str]:
    specs, skipped = expand_sweep(config)
    for note in skipped:
        context.log.info(f"skipped {note}")
    ids = state.run(lambda store: register_specs(store, specs))
    added = add_scenario_partitions(context.instance, ids)
    context.log.info(f"{len(ids)} scenarios ({len(added)} new partitions)")
    context.add_output_metadata({"scenarios": len(ids), "new_partitions": len(added)})
    return ids


@dg.job(
    name=PARAMETER_SWEEP_JOB,
    description="Register a parameter sweep; the automation sensor backtests each partition.",
)
def parameter_sweep_job() -> None:
    register_sweep()
