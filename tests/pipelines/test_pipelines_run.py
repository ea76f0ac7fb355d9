"""`run_pipeline` (what `virtufin run` calls) and `virtufin ui` (what `make ui` starts)."""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import pytest

from pipelines import run_pipeline
from pipelines.backtest.specs import BacktestSpec, GateThresholds, PromotionGates
from virtufin.cli import ui
from virtufin.config import load_settings


def test_run_pipeline_ingests_backtests_and_promotes_in_process(tmp_path: Path) -> None:
    settings = load_settings(env={"VIRTUFIN_STATE_DIR": str(tmp_path / "state")})
    lenient = GateThresholds(min_sharpe=-100, max_drawdown_pct=100, min_trades=0)
    gates = PromotionGates(backtest=lenient, paper=lenient, shadow=lenient)
    specs = [
        BacktestSpec(
            params={"fast": fast, "slow": 10},
            symbols=("AAA",),
            start=date(2024, 1, 1),
            end=date(2024, 2, 29),
            gates=gates,
            paper_sessions=41,  # evidence windows long enough for SMA(·, 10) to trade
            shadow_sessions=35,
        )
        for fast in (3, 5)
    ]
    report = run_pipeline(
        start=date(2024, 1, 1),
        end=date(2024, 2, 29),
        symbols=("AAA", "BBB"),
        specs=specs,
        settings=settings,
    )
    assert report.failed_ingestion_checks == []
    assert report.ingestion["rows_stored"] == 2 * 41  # sessions in Jan-Feb 2024
    assert [b.success for b in report.backtests] == [True, True]
    assert all(Path(str(b.plot)).is_file() for b in report.backtests)
    best = max(report.backtests, key=lambda b: b.metrics["sharpe_ratio"])
    assert report.winner == best.scenario_id
    assert report.reached == "LIVE", json.dumps(report.promotion_entries[-1]["checks"])
    assert [e["decision"] for e in report.promotion_entries] == ["promoted"] * 3
    assert json.loads(json.dumps(report.to_json()))["reached"] == "LIVE"
    # the other scenario is shown failing a gate, with the check and by how much
    shown = [p for p in report.promotions if p.scenario_id != report.winner]
    assert len(shown) == 1
    refusal = shown[0].refusal
    assert refusal is not None
    failed = [c for c in refusal["checks"] if not c["passed"]]
    assert failed
    assert all("actual" in c and "threshold" in c for c in failed)

    again = run_pipeline(
        start=date(2024, 1, 1),
        end=date(2024, 2, 29),
        symbols=("AAA", "BBB"),
        specs=specs,
        settings=settings,
    )
    assert all(p.reused for p in again.promotions)
    assert again.winner == report.winner
    assert [p.entries for p in again.promotions] == [p.entries for p in report.promotions]


def test_ui_starts_dagster_dev_on_the_embedded_instance(tmp_path: Path) -> None:
    settings = load_settings(env={"VIRTUFIN_STATE_DIR": str(tmp_path / "state")})
    argv, env = ui.build_command(settings, port=3111)
    assert argv[1:4] == ["dev", "-m", "pipelines"]
    assert argv[argv.index("--port") + 1] == "3111"
    home = Path(env["DAGSTER_HOME"])
    assert home == (tmp_path / "state" / "dagster").resolve()
    assert "sqlite" in (home / "dagster.yaml").read_text()


def test_ui_registers_a_subcommand_that_can_print_its_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="virtufin")
    ui.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ui", "--print-command"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert " dev -m pipelines " in out
    assert "DAGSTER_HOME=" in out
