"""Dagster instance configuration: production (PostgreSQL, Kubernetes) and the embedded one."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml
from conftest import SYMBOLS, Stack, ingest
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_postgres import DagsterPostgresStorage

from pipelines.definitions import K8S_EXECUTOR_CONFIG
from pipelines.instance import LOCAL_DAGSTER_YAML, ensure_dagster_home
from pipelines.promotion.schedules import PROMOTION_TAGS

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra" / "dagster"
PG_ENV = {
    "DAGSTER_PG_HOST": "127.0.0.1",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "postgres",
    "DAGSTER_PG_PASSWORD": "",
}


def _production_config(tmp_path: Path) -> dict[str, Any]:
    shutil.copy(INFRA / "dagster.yaml", tmp_path / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    return dict(config)


def _ok(schema: Any, value: Any) -> Any:
    result = process_config(schema, value)
    assert result.success, [e.message for e in result.errors or []]
    return result.value


def test_the_production_instance_config_passes_dagsters_own_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        **PG_ENV,
        "DAGSTER_PG_DB": "dagster",
        "DAGSTER_K8S_NAMESPACE": "virtufin",
    }.items():
        monkeypatch.setenv(key, value)
    config = _production_config(tmp_path)
    assert config["run_launcher"]["class"] == "K8sRunLauncher"
    assert config["run_launcher"]["module"] == "dagster_k8s"
    launcher = _ok(K8sRunLauncher.config_type(), config["run_launcher"]["config"])  # type: ignore[no-untyped-call]
    assert launcher["job_namespace"] == "virtufin"
    assert "VIRTUFIN_DEPLOYMENT=production" in launcher["env_vars"]
    storage = _ok(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    assert storage["postgres_db"]["hostname"] == "127.0.0.1"
    assert storage["postgres_db"]["db_name"] == "dagster"
    coordinator = _ok(QueuedRunCoordinator.config_type(), config["run_coordinator"]["config"])
    [limit] = coordinator["tag_concurrency_limits"]
    assert {limit["key"]: limit["value"]} == PROMOTION_TAGS
    executor = k8s_job_executor.config_schema.as_field().config_type
    _ok(executor, K8S_EXECUTOR_CONFIG)


def test_every_secret_of_the_production_config_comes_from_the_environment() -> None:
    raw = yaml.safe_load((INFRA / "dagster.yaml").read_text())
    db = raw["storage"]["postgres"]["postgres_db"]
    for field, var in [
        ("hostname", "DAGSTER_PG_HOST"),
        ("port", "DAGSTER_PG_PORT"),
        ("username", "DAGSTER_PG_USER"),
        ("password", "DAGSTER_PG_PASSWORD"),
        ("db_name", "DAGSTER_PG_DB"),
    ]:
        assert db[field] == {"env": var}


def test_helm_values_deploy_this_code_location_with_the_same_instance_settings() -> None:
    values = yaml.safe_load((INFRA / "values.yaml").read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == "pipelines"
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["VIRTUFIN_DEPLOYMENT"] == "production"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    production = yaml.safe_load((INFRA / "dagster.yaml").read_text())
    launcher = production["run_launcher"]["config"]
    helm = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert [m["name"] for m in helm["envConfigMaps"]] == launcher["env_config_maps"]
    assert [s["name"] for s in helm["envSecrets"]] == launcher["env_secrets"]
    assert helm["volumeMounts"] == launcher["volume_mounts"]
    limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert {x["key"]: x["value"] for x in limits["tagConcurrencyLimits"]} == PROMOTION_TAGS
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["module_name"] == "pipelines"


def test_the_embedded_instance_is_sqlite_under_the_state_folder(tmp_path: Path) -> None:
    assert (INFRA / "dagster.local.yaml").read_text() == LOCAL_DAGSTER_YAML
    home = ensure_dagster_home(tmp_path / "state")
    assert home == (tmp_path / "state" / "dagster").resolve()
    config, _ = dagster_instance_config(str(home))
    assert config["storage"]["sqlite"]["base_dir"] == f"{home}/storage"
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert instance.is_persistent
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
    finally:
        instance.dispose()


@pytest.fixture
def dagster_database(postgres_dsn: str) -> Iterator[str]:
    name = f"dagster_test_{secrets.token_hex(4)}"
    admin = postgres_dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.postgres
def test_a_real_job_runs_on_a_postgres_backed_instance(
    stack: Stack, dagster_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {**PG_ENV, "DAGSTER_PG_DB": dagster_database}.items():
        monkeypatch.setenv(key, value)
    production = yaml.safe_load((INFRA / "dagster.yaml").read_text())
    home = tmp_path / "dagster_home"
    home.mkdir()
    # the production storage block as is; runs launch in process here (no cluster)
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": production["storage"]}))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = ingest(stack.defs, instance, date(2024, 4, 1), date(2024, 4, 5), SYMBOLS)
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        assert run.status == dg.DagsterRunStatus.SUCCESS
        event = instance.get_latest_materialization_event(dg.AssetKey("daily_bars"))
        assert event is not None
        assert event.run_id == result.run_id
        evaluations = [
            e for e in result.get_asset_check_evaluations() if e.check_name == "ohlc_consistent"
        ]
        assert evaluations
        assert evaluations[0].passed
    finally:
        instance.dispose()
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{dagster_database}") as conn:
        count = conn.execute("SELECT count(*) FROM runs").fetchone()
    assert count is not None
    assert count[0] == 1
