"""The `virtufin` command: real results, clear errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virtufin.cli.main import main


def test_run_replays_the_synthetic_universe_and_reports_real_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--json", "--symbols", "AAA,BBB", "--days", "120"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bars_replayed"] == 240
    assert result["scenarios"] == ["LIVE", "RUN_DEMO"]
    assert set(result["sma_10_20_crossings"]) <= {"AAA", "BBB"}
    assert sum(result["sma_10_20_crossings"].values()) > 0


def test_run_is_deterministic_for_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", "--json", "--seed", "3", "--days", "90"])
    first = json.loads(capsys.readouterr().out)["sma_10_20_crossings"]
    main(["run", "--json", "--seed", "3", "--days", "90"])
    assert json.loads(capsys.readouterr().out)["sma_10_20_crossings"] == first


def test_config_check_reports_the_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check"]) == 0
    assert "4 services (gateway, workmanager, marketdata, execution)" in capsys.readouterr().out


def test_a_broken_config_file_exits_2_with_one_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "services.json"
    bad.write_text('{"services": [{"name": "x"}]}')
    assert main(["config", "check", "--services", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"virtufin: error: {bad}: services.0.daprAppId")
    assert err.count("\n") == 1
