"""The real code location loads, every job resolves, names and checks are what the docs say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

import pipelines
from pipelines.definitions import AUTOMATION_SENSOR, executor_for
from pipelines.ingestion.checks import BAR_CHECKS, CHECK_QUARANTINE
from pipelines.promotion.checks import GATE_CHECKS
from pipelines.promotion.resources import GatewayWorkManagerClient, InProcessWorkManagerClient
from pipelines.promotion.workmanager import Deployment
from pipelines.resources import resources_for
from virtufin.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
ASSETS = {
    "daily_bars": "ingestion",
    "market_data_window": "backtest",
    "backtest_results": "backtest",
    "backtest_evidence": "promotion",
    "paper_evidence": "promotion",
    "shadow_evidence": "promotion",
}
JOBS = {"ingest_bars", "backtest", "parameter_sweep", "promote", "rollback"}


def test_the_real_defs_load_and_every_job_resolves() -> None:
    defs = pipelines.defs
    dg.Definitions.validate_loadable(defs)
    names = {job.name for job in defs.resolve_all_job_defs()}
    assert names >= JOBS
    for name in JOBS:
        assert defs.resolve_job_def(name).name == name


def test_assets_are_grouped_by_domain_with_one_line_docstrings() -> None:
    graph = pipelines.defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == set(ASSETS)
    for key, group in ASSETS.items():
        node = graph.get(dg.AssetKey(key))
        assert node.group_name == group
        assert node.description
        assert "\n" not in node.description.strip()


def test_blocking_checks_are_declared_on_their_assets() -> None:
    graph = pipelines.defs.resolve_asset_graph()

    def checks(asset: str) -> dict[str, bool]:
        return {
            k.name: graph.get_check_spec(k).blocking
            for k in graph.asset_check_keys
            if k.asset_key == dg.AssetKey(asset)
        }

    assert checks("daily_bars") == dict.fromkeys(BAR_CHECKS, True)
    assert checks("market_data_window") == dict.fromkeys((*BAR_CHECKS, CHECK_QUARANTINE), True)
    assert checks("backtest_results") == {"no_worker_errors": True}
    for asset in ("backtest_evidence", "paper_evidence", "shadow_evidence"):
        assert checks(asset) == dict.fromkeys(GATE_CHECKS, True)


def test_schedule_and_sensors_are_registered() -> None:
    defs = pipelines.defs
    assert defs.resolve_schedule_def("daily_bars_schedule").cron_schedule == "0 6 * * *"
    automation = defs.resolve_sensor_def(AUTOMATION_SENSOR)
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_sensor_def("late_bars_sensor").job_name == "ingest_bars"


def test_backtests_follow_new_market_data_declaratively() -> None:
    graph = pipelines.defs.resolve_asset_graph()
    window = graph.get(dg.AssetKey("market_data_window")).automation_condition
    results = graph.get(dg.AssetKey("backtest_results")).automation_condition
    assert window is not None
    assert window.get_label() == "eager_on_new_bars"
    assert results is not None
    assert results.get_label() == "eager"


def test_local_resources_need_no_server_and_production_uses_cluster_pieces(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = resources_for(load_settings())
    assert isinstance(local["workmanager"], InProcessWorkManagerClient)
    assert local["state"].kind == "sqlite"
    assert type(local["market_data"]).__name__ == "SyntheticSource"
    assert executor_for("local").name == "multiprocess"

    env = {
        "VIRTUFIN_DEPLOYMENT": "production",
        "VIRTUFIN_STATE": "postgres",
        "VIRTUFIN_BUS": "nats",
    }
    production = resources_for(load_settings(env=env), env=env)
    assert isinstance(production["workmanager"], GatewayWorkManagerClient)
    assert type(production["market_data"]).__name__ == "DropFolderSource"
    assert production["state"].kind == "postgres"
    assert executor_for("production").name == "k8s"


def test_the_gateway_client_reports_an_unreachable_gateway_clearly() -> None:
    from virtufin.client import ClientError

    client = GatewayWorkManagerClient(gateway_address="127.0.0.1:1", api_key="k")
    deployment = Deployment(
        id="w-live-1",
        worker="w",
        version="1",
        step="LIVE",
        scenario="LIVE",
        lanes={"market": "act", "portfolio": "act", "strategy": "act"},
        candidate="BT_W_1",
    )
    with pytest.raises(ClientError, match=r"Gateway\.InvokeJson: UNAVAILABLE"):
        client.deploy(deployment)


@pytest.mark.slow
def test_dagster_cli_loads_the_code_location(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "virtufin" in done.stdout + done.stderr
