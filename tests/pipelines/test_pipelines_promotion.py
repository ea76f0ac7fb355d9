"""Backtests and the promotion ladder with real Dagster on the shared ingested universe."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest
from conftest import END, START, Stack, ingest
from test_pipelines_ingestion import _vendor_defs, write_vendor_csv

from pipelines.backtest.partitions import SCENARIO_PARTITIONS, add_scenario_partitions
from pipelines.backtest.specs import (
    BacktestSpec,
    GateThresholds,
    PromotionGates,
    load_spec,
    register_specs,
)
from pipelines.promotion.log import read_log
from pipelines.promotion.workmanager import list_desired
from pipelines.resources import StateStoreResource, process_bus
from virtufin import topics
from virtufin.bus import Delivery
from virtufin.envelope import Envelope
from virtufin.scenarios import ScenarioRegistry

LENIENT = GateThresholds(
    min_sharpe=-100.0, max_drawdown_pct=100.0, min_trades=0, max_sharpe_regression=100.0
)


def _spec(fast: int, slow: int, *, gates: PromotionGates | None = None, **kw: Any) -> BacktestSpec:
    values: dict[str, Any] = {
        "worker": "sma_cross",
        "params": {"fast": fast, "slow": slow},
        "symbols": ("AAA",),
        "start": START,
        "end": END,
        "paper_sessions": 40,
        "shadow_sessions": 30,
        "gates": gates or PromotionGates(backtest=LENIENT, paper=LENIENT, shadow=LENIENT),
    }
    values.update(kw)
    return BacktestSpec.model_validate(values)


def _register(stack: Stack, *specs: BacktestSpec) -> list[str]:
    state: StateStoreResource = stack.resources["state"]
    ids = state.run(lambda store: register_specs(store, list(specs)))
    add_scenario_partitions(stack.instance, ids)
    return ids


def _run(stack: Stack, job: str, sid: str) -> dg.ExecuteInProcessResult:
    return stack.job(job).execute_in_process(
        instance=stack.instance, partition_key=sid, raise_on_error=False
    )


def _materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    out = {}
    for event in result.get_asset_materialization_events():
        m = event.event_specific_data.materialization  # type: ignore[union-attr]
        out[m.asset_key.to_user_string()] = {k: v.value for k, v in m.metadata.items()}
    return out


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {
        f"{e.asset_key.to_user_string()}.{e.check_name}": e
        for e in result.get_asset_check_evaluations()
    }


def _log(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    state: StateStoreResource = stack.resources["state"]
    return [e for e in state.run(read_log) if e["runid"] == run_id]


@pytest.fixture
def audit_events() -> Iterator[list[Envelope]]:
    seen: list[Envelope] = []

    def on_event(envelope: Envelope, delivery: Delivery) -> None:
        seen.append(envelope)

    subscription = process_bus().subscribe_sync(topics.PROMOTION_AUDIT, on_event)
    yield seen
    subscription.unsubscribe_sync()


def test_a_scenario_is_a_partition_a_registry_entry_and_a_stored_spec(stack: Stack) -> None:
    spec = _spec(5, 10)
    [sid] = _register(stack, spec)
    assert sid == spec.scenario_id
    assert sid.startswith("BT_SMA_CROSS_")
    assert sid in stack.instance.get_dynamic_partitions(SCENARIO_PARTITIONS)
    state: StateStoreResource = stack.resources["state"]
    scenario = state.run(lambda store: ScenarioRegistry(store).get(sid, fresh=True))
    assert scenario.market.selector == "SYNTH_DAILY"
    assert scenario.strategy.id == "sma_cross@0.1.0"
    assert state.run(lambda store: load_spec(store, sid)) == spec


def test_backtest_results_are_stored_with_metrics_plot_and_tables(stack: Stack) -> None:
    [sid] = _register(stack, _spec(5, 20))
    result = _run(stack, "backtest", sid)
    assert result.success
    meta = _materialized(result)["backtest_results"]
    results_dir = Path(meta["results_dir"])
    assert results_dir == stack.state_dir / "results" / sid / result.run_id
    for name in ("trades.parquet", "orders.parquet", "equity.parquet", "equity.png"):
        assert (results_dir / name).is_file(), name
    assert pq.read_table(results_dir / "trades.parquet").num_rows == meta["trades"]
    assert meta["equity_plot"].startswith("![")
    assert "data:image/png;base64," in meta["equity_plot"]
    assert (results_dir / "equity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"sharpe_ratio", "max_drawdown_pct", "return_pct", "engine_secs"} <= set(meta)
    assert meta["metrics_table"].records
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_the_ladder_climbs_to_live_logs_announces_and_deploys(
    stack: Stack, audit_events: list[Envelope]
) -> None:
    [sid] = _register(stack, _spec(3, 12))
    result = _run(stack, "promote", sid)
    assert result.success, result.get_step_failure_events()
    assert set(_materialized(result)) == {
        "market_data_window",
        "backtest_results",
        "backtest_evidence",
        "paper_evidence",
        "shadow_evidence",
    }
    entries = _log(stack, result.run_id)
    assert [(e["from"], e["to"], e["decision"]) for e in entries] == [
        ("backtest", "paper", "promoted"),
        ("paper", "shadow", "promoted"),
        ("shadow", "LIVE", "promoted"),
    ]
    assert [e["sequence"] for e in entries] == sorted(e["sequence"] for e in entries)
    assert all(len(e["checks"]) == 4 for e in entries)
    assert [ev.type for ev in audit_events] == ["com.virtufin.promotion.audit.promoted"] * 3
    assert [ev.data["sequence"] for ev in audit_events] == [e["sequence"] for e in entries]
    state: StateStoreResource = stack.resources["state"]
    desired = {d.id: d for d in state.run(list_desired) if d.candidate == sid}
    live = desired[f"sma_cross-live-{sid.rsplit('_', 1)[1]}"]
    assert (live.scenario, live.desired, live.lanes["strategy"]) == ("LIVE", "running", "act")
    assert {d.step: d.desired for d in desired.values()} == {
        "paper": "stopped",
        "shadow": "stopped",
        "LIVE": "running",
    }
    paper = state.run(lambda store: ScenarioRegistry(store).get(f"PP_{sid[3:]}", fresh=True))
    assert (paper.market.lane, paper.portfolio.lane, paper.strategy.lane) == ("act", "hyp", "hyp")


def test_a_failed_gate_stops_the_ladder_and_says_which_and_by_how_much(
    stack: Stack, audit_events: list[Envelope]
) -> None:
    strict = GateThresholds(min_sharpe=50.0, max_drawdown_pct=100.0, min_trades=0)
    [sid] = _register(stack, _spec(4, 16, gates=PromotionGates(backtest=strict)))
    result = _run(stack, "promote", sid)
    assert not result.success
    assert "backtest_evidence" in _materialized(result)
    assert not {"paper_evidence", "shadow_evidence"} & set(_materialized(result))
    check = _checks(result)["backtest_evidence.min_sharpe"]
    assert not check.passed
    assert check.metadata["threshold"].value == 50.0
    actual = float(str(check.metadata["actual"].value))
    assert check.metadata["margin"].value == pytest.approx(actual - 50.0)
    assert _checks(result)["backtest_evidence.min_trades"].passed
    [entry] = _log(stack, result.run_id)
    assert (entry["from"], entry["to"], entry["decision"]) == ("backtest", "paper", "refused")
    assert entry["reason"].startswith("min_sharpe: actual ")
    assert "vs threshold 50" in entry["reason"]
    failed = [c for c in entry["checks"] if not c["passed"]]
    assert failed == [{"name": "min_sharpe", "passed": False, "actual": actual, "threshold": 50.0}]
    assert [ev.type for ev in audit_events] == ["com.virtufin.promotion.audit.refused"]


def test_a_new_version_replaces_live_and_rollback_restores_the_previous(stack: Stack) -> None:
    first, second = _register(stack, _spec(2, 9), _spec(6, 14))
    assert _run(stack, "promote", first).success
    promoted = _run(stack, "promote", second)
    assert promoted.success
    [to_live] = [e for e in _log(stack, promoted.run_id) if e["to"] == "LIVE"]
    assert f"sma_cross-live-{first.rsplit('_', 1)[1]}" in to_live["retired"]
    regression = next(c for c in to_live["checks"] if c["name"] == "no_regression_vs_live")
    assert regression["threshold"] is not None  # compared against the version LIVE before
    rollback = stack.job("rollback").execute_in_process(
        instance=stack.instance,
        run_config={"ops": {"restore_previous_live": {"config": {"strategy": "sma_cross"}}}},
    )
    assert rollback.success
    [entry] = _log(stack, rollback.run_id)
    assert entry["decision"] == "rolled_back"
    assert entry["deployment"]["candidate"] == first
    assert entry["retired"] == [f"sma_cross-live-{second.rsplit('_', 1)[1]}"]
    state: StateStoreResource = stack.resources["state"]
    running = [d for d in state.run(list_desired) if d.step == "LIVE" and d.desired == "running"]
    assert [d.candidate for d in running] == [first]


def test_bad_market_data_is_quarantined_and_blocks_promotion(
    stack: Stack, tmp_path: Path, audit_events: list[Envelope]
) -> None:
    folder = tmp_path / "drop"
    write_vendor_csv(folder, bad_day="2024-01-17")
    vendor = _vendor_defs(stack, folder)
    ingested = ingest(vendor, stack.instance, date(2024, 1, 2), date(2024, 1, 31), ("BAD",))
    assert not ingested.success  # the blocking bar checks failed
    [sid] = _register(
        stack,
        _spec(
            3,
            6,
            selector="VENDOR_BAD",
            symbols=("BAD",),
            start=date(2024, 1, 2),
            end=date(2024, 1, 31),
        ),
    )
    result = _run(stack, "promote", sid)
    assert not result.success
    assert set(_materialized(result)) == {"market_data_window"}
    checks = _checks(result)
    assert not checks["market_data_window.no_quarantined_rows"].passed
    assert not checks["market_data_window.ohlc_consistent"].passed
    assert checks["market_data_window.no_quarantined_rows"].metadata["actual"].value == 1
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started == {"market_data_window"}  # nothing downstream of the failed checks ran
    assert _log(stack, result.run_id) == []
    assert audit_events == []


def test_a_parameter_sweep_registers_valid_combinations_as_partitions(stack: Stack) -> None:
    config = {
        "worker": "sma_cross",
        "param_grid": {"fast": [5, 30], "slow": [10, 25]},
        "symbols": ["AAA", "BBB"],
        "start": START.isoformat(),
        "end": END.isoformat(),
    }
    result = stack.job("parameter_sweep").execute_in_process(
        instance=stack.instance, run_config={"ops": {"register_sweep": {"config": config}}}
    )
    assert result.success
    ids = result.output_for_node("register_sweep")
    assert len(ids) == 4  # fast < slow holds for (5, 10) and (5, 25) only; two symbols each
    partitions = set(stack.instance.get_dynamic_partitions(SCENARIO_PARTITIONS))
    assert set(ids) <= partitions
