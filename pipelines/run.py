"""Run ingestion → backtests → promotion in this process, with real Dagster (no daemon).

This is what ``virtufin run`` calls. Every step is a real Dagster run on the embedded instance
(``<state_dir>/dagster``), so the UI (`virtufin ui`) shows them afterwards:

1. `ingest_bars` over ``[start, end] × symbols`` as one run (single-run backfill);
2. the scenarios are registered (registry, spec, partition) and each is backtested
   (`backtest` job, one run per scenario partition);
3. the best scenario by Sharpe ratio among those whose checks passed climbs the ladder
   (`promote` job); a failed gate stops it and the report says which and by how much.

Example:
    >>> report = run_pipeline(start=date(2024, 1, 1), end=date(2024, 12, 31))  # doctest: +SKIP
    >>> report.reached  # doctest: +SKIP
    'LIVE'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg

from pipelines.backtest.partitions import add_scenario_partitions
from pipelines.backtest.schedules import BACKTEST_JOB
from pipelines.backtest.specs import BacktestSpec, register_specs
from pipelines.definitions import build_defs
from pipelines.ingestion.partitions import BARS_START_DATE, DEFAULT_SYMBOLS, Universe
from pipelines.ingestion.schedules import INGEST_BARS_JOB
from pipelines.instance import ensure_dagster_home
from pipelines.promotion.log import read_log
from pipelines.promotion.schedules import PROMOTE_JOB
from pipelines.resources import StateStoreResource, resources_for
from virtufin.config import Settings, load_settings
from virtufin.marketdata import DEFAULT_SELECTOR

__all__ = [
    "PipelineReport",
    "PromotionReport",
    "ScenarioReport",
    "default_specs",
    "run_pipeline",
]

_RANGE_START = "dagster/asset_partition_range_start"
_RANGE_END = "dagster/asset_partition_range_end"
_MAX_PROMOTION_TRIES = 5
_DEMO_PARAMS: tuple[dict[str, Any], ...] = ({"fast": 10, "slow": 20}, {"fast": 20, "slow": 50})


@dataclass(frozen=True, slots=True)
class ScenarioReport:
    """One scenario's backtest: metrics and where its files went."""

    scenario_id: str
    spec: BacktestSpec
    run_id: str
    success: bool
    metrics: dict[str, Any]
    failed_checks: list[str]
    results_dir: str | None
    plot: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario_id": self.scenario_id,
            "strategy": self.spec.strategy_id,
            "params": self.spec.params,
            "symbols": list(self.spec.symbols),
            "run_id": self.run_id,
            "success": self.success,
            "metrics": self.metrics,
            "failed_checks": self.failed_checks,
            "results_dir": self.results_dir,
            "plot": self.plot,
        }


@dataclass(frozen=True, slots=True)
class PromotionReport:
    """One scenario's climb up the ladder (or the log entries of an earlier identical one)."""

    scenario_id: str
    run_id: str | None
    entries: list[dict[str, Any]]
    reused: bool = False

    @property
    def reached(self) -> str:
        """The highest step reached: the last promoted ``to``, else ``backtest``."""
        promoted = [e["to"] for e in self.entries if e.get("decision") == "promoted"]
        return str(promoted[-1]) if promoted else "backtest"

    @property
    def refusal(self) -> dict[str, Any] | None:
        """The refusing entry, with the failed checks, if the climb was stopped."""
        return next((e for e in self.entries if e.get("decision") == "refused"), None)

    def to_json(self) -> dict[str, Any]:
        refusal = self.refusal
        failed = [c for c in (refusal or {}).get("checks", []) if not c.get("passed")]
        return {
            "scenario_id": self.scenario_id,
            "run_id": self.run_id,
            "reached": self.reached,
            "reused": self.reused,
            "refused_at": refusal.get("to") if refusal else None,
            "failed_checks": failed,
            "entries": self.entries,
        }


def _climb(
    attempt: Callable[[str], PromotionReport], reports: Sequence[ScenarioReport]
) -> list[PromotionReport]:
    """Try the best scenarios by Sharpe (at most five) until one reaches LIVE; then try the
    worst too when no gate has refused anything yet, so that a refusal is shown with reasons."""
    ranked = sorted(
        (r for r in reports if r.success and "sharpe_ratio" in r.metrics),
        key=lambda r: r.metrics["sharpe_ratio"],
        reverse=True,
    )
    done: list[PromotionReport] = []
    for report in ranked[:_MAX_PROMOTION_TRIES]:
        done.append(attempt(report.scenario_id))
        if done[-1].reached == "LIVE":
            break
    tried = {p.scenario_id for p in done}
    if ranked and not any(p.refusal for p in done) and ranked[-1].scenario_id not in tried:
        done.append(attempt(ranked[-1].scenario_id))
    return done


@dataclass(frozen=True, slots=True)
class PipelineReport:
    """What `run_pipeline` did."""

    dagster_home: Path
    data_root: Path
    ingestion_run_id: str
    ingestion: dict[str, Any]
    failed_ingestion_checks: list[str]
    backtests: list[ScenarioReport]
    promotions: list[PromotionReport] = field(default_factory=list)

    @property
    def winner(self) -> str | None:
        """The scenario promoted to LIVE, else the first one tried."""
        live = [p for p in self.promotions if p.reached == "LIVE"]
        chosen = live[0] if live else (self.promotions[0] if self.promotions else None)
        return chosen.scenario_id if chosen is not None else None

    @property
    def promotion_entries(self) -> list[dict[str, Any]]:
        """The log entries of the winner's climb."""
        return next((p.entries for p in self.promotions if p.scenario_id == self.winner), [])

    @property
    def promotion_run_id(self) -> str | None:
        return next((p.run_id for p in self.promotions if p.scenario_id == self.winner), None)

    @property
    def reached(self) -> str | None:
        """The highest ladder step the winner reached (``backtest`` if refused at once)."""
        return next((p.reached for p in self.promotions if p.scenario_id == self.winner), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "dagster_home": str(self.dagster_home),
            "data_root": str(self.data_root),
            "ingestion_run_id": self.ingestion_run_id,
            "ingestion": self.ingestion,
            "failed_ingestion_checks": self.failed_ingestion_checks,
            "backtests": [b.to_json() for b in self.backtests],
            "winner": self.winner,
            "promotion_run_id": self.promotion_run_id,
            "promotion": self.promotion_entries,
            "promotions": [p.to_json() for p in self.promotions],
            "reached": self.reached,
        }


def default_specs(
    symbols: Sequence[str], start: date, end: date, *, selector: str = DEFAULT_SELECTOR
) -> list[BacktestSpec]:
    """The bundled `sma_cross` worker, two parameter sets, one scenario per symbol."""
    return [
        BacktestSpec(
            worker="sma_cross",
            params=params,
            selector=selector,
            symbols=(symbol,),
            start=start,
            end=end,
        )
        for params in _DEMO_PARAMS
        for symbol in symbols
    ]


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
        if materialization.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in materialization.metadata.items()}
    return {}


def _failed_checks(result: dg.ExecuteInProcessResult) -> list[str]:
    return [
        f"{e.asset_key.to_user_string()}.{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed
    ]


def run_pipeline(
    *,
    start: date,
    end: date,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    specs: Sequence[BacktestSpec] | None = None,
    settings: Settings | None = None,
    instance: dg.DagsterInstance | None = None,
    persist: bool = False,
    promote: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    log_level: str = "INFO",
) -> PipelineReport:
    """Ingest ``[start, end] × symbols``, backtest `specs` (default `default_specs`), promote.

    Args:
        settings: default `load_settings()`; its `state_dir` holds data, results, state and
            the Dagster instance.
        instance: the Dagster instance to run on (default: see `persist`).
        persist: without `instance`, run on the embedded instance under
            ``<state_dir>/dagster`` so that `virtufin ui` shows the runs afterwards; the
            default, an ephemeral in-memory instance, is ~4x faster (Dagster stores one event
            per (date, symbol) partition: ~9 ms each in memory, ~35 ms in SQLite).
        promote: run the promotion ladder for the best scenario.
        log_level: the level of the runs' console logs (``CRITICAL`` silences them).
        progress: called as ``progress(stage, done, total)`` for the stages ``ingest``,
            ``backtest`` and ``promote`` (for progress bars).
    """
    settings = settings or load_settings()
    resources = resources_for(settings)
    first = min(date.fromisoformat(BARS_START_DATE), start).isoformat()
    universe = Universe(symbols=tuple(symbols), start_date=first)
    defs = build_defs(universe=universe, settings=settings, resources=resources)
    home = ensure_dagster_home(settings.state_dir)
    owned = instance is None
    if instance is None:
        instance = (
            dg.DagsterInstance.from_config(str(home)) if persist else dg.DagsterInstance.ephemeral()
        )
    tick = progress or (lambda stage, done, total: None)
    quiet = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    try:
        tick("ingest", 0, 1)
        ingest = defs.resolve_job_def(INGEST_BARS_JOB).execute_in_process(
            instance=instance,
            run_config=quiet,
            raise_on_error=False,
            tags={
                _RANGE_START: f"{start.isoformat()}|{universe.symbols[0]}",
                _RANGE_END: f"{end.isoformat()}|{universe.symbols[-1]}",
            },
        )
        tick("ingest", 1, 1)
        chosen = list(specs) if specs is not None else default_specs(symbols, start, end)
        state: StateStoreResource = resources["state"]
        ids = state.run(lambda store: register_specs(store, chosen))
        add_scenario_partitions(instance, ids)
        reports = []
        backtest = defs.resolve_job_def(BACKTEST_JOB)
        for done, (sid, spec) in enumerate(zip(ids, chosen, strict=True)):
            tick("backtest", done, len(ids))
            run = backtest.execute_in_process(
                instance=instance, partition_key=sid, raise_on_error=False, run_config=quiet
            )
            meta = _metadata(run, "backtest_results")
            reports.append(
                ScenarioReport(
                    scenario_id=sid,
                    spec=spec,
                    run_id=run.run_id,
                    success=run.success,
                    metrics={k: v for k, v in meta.items() if isinstance(v, int | float)},
                    failed_checks=_failed_checks(run),
                    results_dir=meta.get("results_dir"),
                    plot=meta.get("equity_plot_path"),
                )
            )
        tick("backtest", len(ids), len(ids))
        promotions: list[PromotionReport] = []
        if promote:
            promote_job = defs.resolve_job_def(PROMOTE_JOB)
            promotions_made: list[str] = []

            def attempt(sid: str) -> PromotionReport:
                tick("promote", len(promotions_made), _MAX_PROMOTION_TRIES + 1)
                promotions_made.append(sid)
                earlier = [e for e in state.run(read_log) if e.get("scenario") == sid]
                if earlier:  # decided on this very data before: a rerun adds nothing
                    return PromotionReport(sid, None, earlier, reused=True)
                run = promote_job.execute_in_process(
                    instance=instance, partition_key=sid, raise_on_error=False, run_config=quiet
                )
                entries = [e for e in state.run(read_log) if e.get("runid") == run.run_id]
                return PromotionReport(sid, run.run_id, entries, reused=False)

            promotions = _climb(attempt, reports)
            tick("promote", len(promotions), len(promotions))
        return PipelineReport(
            dagster_home=home,
            data_root=Path(resources["storage"].data_root),
            ingestion_run_id=ingest.run_id,
            ingestion=_metadata(ingest, "daily_bars"),
            failed_ingestion_checks=_failed_checks(ingest),
            backtests=reports,
            promotions=promotions,
        )
    finally:
        if owned:
            instance.dispose()
