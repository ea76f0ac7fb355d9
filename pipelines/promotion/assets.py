"""The promotion ladder: one asset per step, each gated by blocking checks.

``backtest → paper → shadow → LIVE`` (docs/spec/promotion.md). Each evidence asset gathers its
step's evidence, evaluates the step's gates (its four blocking checks), and then:

- all passed: the version moves up one rung — the next step's scenario is registered, the
  WorkManager is asked to start the version on that step's lanes and to stop the one it
  replaces, a ``promoted`` entry is appended to the promotion log and announced;
- a gate failed: a ``refused`` entry (which checks, actual vs threshold) is appended and
  announced; Dagster skips every later step, so the ladder stops there.

Evidence per step:

| asset               | evidence                                                            |
|---------------------|---------------------------------------------------------------------|
| `backtest_evidence` | the `backtest_results` metrics of the scenario                      |
| `paper_evidence`    | embedded mode: a replay of the last ``paper_sessions`` sessions     |
| `shadow_evidence`   | embedded mode: a replay of the last ``shadow_sessions`` sessions    |

Embedded mode has no live market, so paper and shadow evidence are replays of the most recent
data window through the same engine and worker, under the step's scenario id (``PP_…``,
``SH_…``); the replay itself runs on the ``hyp`` market lane, since ``act`` lanes only carry
live data. On a cluster, the same assets would read the results the deployed paper/shadow
workers produced; that reader is not written yet.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import dagster as dg

from pipelines.backtest.assets import BACKTEST_RESULTS, result_metadata, results_metrics
from pipelines.backtest.runner import GateMetrics, recent_window, run_spec
from pipelines.backtest.specs import BacktestSpec, load_spec, step_scenario_id
from pipelines.promotion.checks import Gate, evaluate_gates, gate_check_specs
from pipelines.promotion.log import append_entry, audit_envelope
from pipelines.promotion.partitions import scenario_partitions
from pipelines.promotion.resources import WorkManagerClient
from pipelines.promotion.workmanager import Deployment
from pipelines.resources import EventBusResource, StateStoreResource, StorageResource
from virtufin import topics
from virtufin.lanes import LIVE, Lane
from virtufin.scenarios import MarketLane, PortfolioLane, Scenario, ScenarioRegistry, StrategyLane

__all__ = [
    "BACKTEST_EVIDENCE",
    "NEXT_STEP",
    "PAPER_EVIDENCE",
    "PROMOTION_GROUP",
    "SHADOW_EVIDENCE",
    "backtest_evidence",
    "paper_evidence",
    "shadow_evidence",
]

PROMOTION_GROUP: Final = "promotion"
BACKTEST_EVIDENCE: Final = "backtest_evidence"
PAPER_EVIDENCE: Final = "paper_evidence"
SHADOW_EVIDENCE: Final = "shadow_evidence"
NEXT_STEP: Final = {"backtest": "paper", "paper": "shadow", "shadow": LIVE}
STEP_LANES: Final = {
    "paper": (Lane.ACT, Lane.HYP, Lane.HYP),
    "shadow": (Lane.ACT, Lane.ACT, Lane.HYP),
    LIVE: (Lane.ACT, Lane.ACT, Lane.ACT),
}


def _step_scenario(spec: BacktestSpec, sid: str, step: str) -> Scenario:
    market, portfolio, strategy = STEP_LANES[step]
    return Scenario(
        id=step_scenario_id(sid, step),
        scenarioName=f"{step.capitalize()} {spec.strategy_id} from {sid}",
        market=MarketLane(lane=market),
        portfolio=PortfolioLane(lane=portfolio),
        strategy=StrategyLane(lane=strategy, id=spec.strategy_id),
    )


def _baseline(
    spec: BacktestSpec,
    sid: str,
    candidate: GateMetrics,
    workmanager: WorkManagerClient,
    data_root: str,
    run_id: str,
    window: tuple[Any, Any],
) -> tuple[GateMetrics | None, str]:
    """The LIVE version of the same worker replayed on the same data (None if none is LIVE)."""
    live = sorted(workmanager.running(worker=spec.worker, step=LIVE), key=lambda d: d.updated_at)
    if not live:
        return None, ""
    current = live[-1]
    if current.candidate == sid:
        return candidate, current.id
    result = run_spec(
        spec,
        data_root,
        scenario_id=f"BL_{sid.split('_', 1)[1]}",
        run_id=f"{run_id}-baseline",
        results_dir=None,
        start=window[0],
        end=window[1],
        params=current.params,
        finalize_trades=window != (spec.start, spec.end),
    )
    return GateMetrics.of(result.stats.to_json()), current.id


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _carry_out(
    step: str,
    spec: BacktestSpec,
    sid: str,
    gates: list[Gate],
    *,
    run_id: str,
    state: StateStoreResource,
    workmanager: WorkManagerClient,
    bus: EventBusResource,
) -> dict[str, Any]:
    """Promote or refuse; log and announce the decision. Returns the stored log entry."""
    target = NEXT_STEP[step]
    entry: dict[str, Any] = {
        "strategy": spec.worker,
        "version": spec.version,
        "parameters": spec.params,
        "scenario": sid,
        "from": step,
        "to": target,
        "checks": [g.to_json() for g in gates],
        "runid": run_id,
    }
    failed = [g for g in gates if not g.passed]
    if failed:
        entry["decision"] = "refused"
        entry["reason"] = "; ".join(
            f"{g.name}: actual {_show(g.actual)} vs threshold {_show(g.threshold)}" for g in failed
        )
    else:
        if target == LIVE:
            scenario_id = LIVE
        else:
            scenario = _step_scenario(spec, sid, target)
            scenario_id = scenario.id
            state.run(
                lambda store: ScenarioRegistry(store).register(scenario, replace_existing=True)
            )
        lanes = dict(zip(("market", "portfolio", "strategy"), STEP_LANES[target], strict=True))
        deployed = workmanager.deploy(
            Deployment(
                id=Deployment.make_id(spec.worker, target, sid),
                worker=spec.worker,
                version=spec.version,
                params=spec.params,
                step=target,  # type: ignore[arg-type]
                scenario=scenario_id,
                lanes={k: str(v) for k, v in lanes.items()},
                candidate=sid,
                runid=run_id,
            )
        )
        retired = [
            workmanager.retire(d, reason=f"promoted to {target} as {deployed.id}")
            for d in workmanager.running(worker=spec.worker, step=step)
            if d.candidate == sid
        ]
        if target == LIVE:
            retired += [
                workmanager.retire(d, reason=f"replaced on LIVE by {deployed.id}")
                for d in workmanager.running(worker=spec.worker, step=LIVE)
                if d.id != deployed.id
            ]
        entry["decision"] = "promoted"
        entry["deployment"] = deployed.model_dump(mode="json")
        entry["retired"] = [d.id for d in retired]
    stored = state.run(lambda store: append_entry(store, entry))
    bus.publish(topics.PROMOTION_AUDIT, audit_envelope(stored))
    return stored


def _latest_results_dir(
    context: dg.AssetExecutionContext, storage: StorageResource, sid: str
) -> Path:
    same_run = storage.results_dir(sid, context.run.run_id)
    if (same_run / "metrics.json").exists():
        return same_run
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(BACKTEST_RESULTS), asset_partitions=[sid]),
        limit=1,
    ).records
    if not records or records[0].asset_materialization is None:
        raise dg.Failure(f"{BACKTEST_RESULTS} has no materialization for {sid}")
    found = records[0].asset_materialization.metadata.get("results_dir")
    if found is None:
        raise dg.Failure(f"the latest {BACKTEST_RESULTS} of {sid} has no results_dir")
    return Path(str(found.value))


def _step_output(
    asset: str,
    step: str,
    gates: list[Gate],
    entry: dict[str, Any],
    extra: dict[str, Any],
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    yield dg.MaterializeResult(
        metadata={
            "step": step,
            "decision": entry["decision"],
            "to": entry["to"],
            "promotion_log_sequence": entry["sequence"],
            "failed_gates": ", ".join(g.name for g in gates if not g.passed) or "none",
            **extra,
        }
    )
    for gate in gates:
        yield gate.result(asset)


@dg.asset(
    name=BACKTEST_EVIDENCE,
    group_name=PROMOTION_GROUP,
    partitions_def=scenario_partitions,
    deps=[BACKTEST_RESULTS],
    check_specs=gate_check_specs(BACKTEST_EVIDENCE),
)
def backtest_evidence(
    context: dg.AssetExecutionContext,
    state: StateStoreResource,
    storage: StorageResource,
    workmanager: WorkManagerClient,
    bus: EventBusResource,
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    """The backtest step's gate on the scenario's backtest results (→ paper)."""
    sid = context.partition_key
    spec = state.run(lambda store: load_spec(store, sid))
    results_dir = _latest_results_dir(context, storage, sid)
    candidate = GateMetrics.of(results_metrics(results_dir))
    baseline, live_id = _baseline(
        spec,
        sid,
        candidate,
        workmanager,
        storage.data_root,
        context.run.run_id,
        (spec.start, spec.end),
    )
    gates = evaluate_gates(candidate, baseline, spec.gates.backtest)
    entry = _carry_out(
        "backtest",
        spec,
        sid,
        gates,
        run_id=context.run.run_id,
        state=state,
        workmanager=workmanager,
        bus=bus,
    )
    extra = {"results_dir": dg.MetadataValue.path(str(results_dir)), "live_baseline": live_id}
    yield from _step_output(BACKTEST_EVIDENCE, "backtest", gates, entry, extra)


def _replay_step(
    context: dg.AssetExecutionContext,
    step: str,
    asset: str,
    sessions_of: str,
    state: StateStoreResource,
    storage: StorageResource,
    workmanager: WorkManagerClient,
    bus: EventBusResource,
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    sid = context.partition_key
    spec = state.run(lambda store: load_spec(store, sid))
    window = recent_window(spec, int(getattr(spec, sessions_of)))
    step_id = step_scenario_id(sid, step)
    results_dir = storage.results_dir(step_id, context.run.run_id)
    result = run_spec(
        spec,
        storage.data_root,
        scenario_id=step_id,
        run_id=context.run.run_id,
        results_dir=results_dir,
        start=window[0],
        end=window[1],
        finalize_trades=True,
    )
    candidate = GateMetrics.of(result.stats.to_json())
    baseline, live_id = _baseline(
        spec, sid, candidate, workmanager, storage.data_root, context.run.run_id, window
    )
    gates = evaluate_gates(candidate, baseline, spec.gates.for_step(step))
    entry = _carry_out(
        step,
        spec,
        sid,
        gates,
        run_id=context.run.run_id,
        state=state,
        workmanager=workmanager,
        bus=bus,
    )
    extra = {
        "window": f"{window[0].isoformat()}..{window[1].isoformat()}",
        "live_baseline": live_id,
        **result_metadata(result, results_dir, title=f"{step} {step_id} {spec.strategy_id}"),
    }
    yield from _step_output(asset, step, gates, entry, extra)


@dg.asset(
    name=PAPER_EVIDENCE,
    group_name=PROMOTION_GROUP,
    partitions_def=scenario_partitions,
    deps=[BACKTEST_EVIDENCE],
    check_specs=gate_check_specs(PAPER_EVIDENCE),
)
def paper_evidence(
    context: dg.AssetExecutionContext,
    state: StateStoreResource,
    storage: StorageResource,
    workmanager: WorkManagerClient,
    bus: EventBusResource,
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    """The paper step (act/hyp/hyp): recent-window evidence and its gate (→ shadow)."""
    yield from _replay_step(
        context, "paper", PAPER_EVIDENCE, "paper_sessions", state, storage, workmanager, bus
    )


@dg.asset(
    name=SHADOW_EVIDENCE,
    group_name=PROMOTION_GROUP,
    partitions_def=scenario_partitions,
    deps=[PAPER_EVIDENCE],
    check_specs=gate_check_specs(SHADOW_EVIDENCE),
)
def shadow_evidence(
    context: dg.AssetExecutionContext,
    state: StateStoreResource,
    storage: StorageResource,
    workmanager: WorkManagerClient,
    bus: EventBusResource,
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    """The shadow step (act/act/hyp): recent-window evidence and its gate (→ LIVE)."""
    yield from _replay_step(
        context, "shadow", SHADOW_EVIDENCE, "shadow_sessions", state, storage, workmanager, bus
    )
