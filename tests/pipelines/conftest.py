"""Shared fixtures for the Dagster pipeline tests.

Dagster is imported once per session and one ingested universe (3 symbols × ~3 months of
synthetic daily bars) is shared; each test adds its own scenarios (distinct ids) to the shared
ephemeral instance. The environment every test sees is set by an autouse monkeypatch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pipelines import build_defs
from pipelines.ingestion.partitions import Universe
from pipelines.resources import resources_for
from virtufin.config import Settings, load_settings

SYMBOLS = ("AAA", "BBB", "CCC")
START = date(2024, 1, 1)
END = date(2024, 3, 29)
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


@dataclass
class Stack:
    """One embedded Virtufin + Dagster stack on a temporary state folder."""

    state_dir: Path
    settings: Settings
    resources: dict[str, Any]
    defs: dg.Definitions
    instance: dg.DagsterInstance
    ingestion: dg.ExecuteInProcessResult

    def job(self, name: str) -> dg.JobDefinition:
        return self.defs.resolve_job_def(name)

    def ingest(
        self,
        start: date,
        end: date,
        *,
        defs: dg.Definitions | None = None,
        symbols: tuple[str, ...] = SYMBOLS,
    ) -> dg.ExecuteInProcessResult:
        return ingest(defs or self.defs, self.instance, start, end, symbols)


def env_for(state_dir: Path) -> dict[str, str]:
    return {
        "VIRTUFIN_DEPLOYMENT": "test",
        "VIRTUFIN_STATE_DIR": str(state_dir),
        "VIRTUFIN_STATE": "sqlite",
        "VIRTUFIN_BUS": "memory",
    }


def ingest(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    start: date,
    end: date,
    symbols: tuple[str, ...] = SYMBOLS,
) -> dg.ExecuteInProcessResult:
    """One single-run backfill of ``[start, end] × symbols``."""
    return defs.resolve_job_def("ingest_bars").execute_in_process(
        instance=instance,
        raise_on_error=False,
        tags={
            RANGE_START: f"{start.isoformat()}|{symbols[0]}",
            RANGE_END: f"{end.isoformat()}|{symbols[-1]}",
        },
    )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state_dir = tmp_path_factory.mktemp("virtufin-state")
    env = env_for(state_dir)
    settings = load_settings(env=env)
    resources = resources_for(settings, env=env)
    defs = build_defs(
        universe=Universe(symbols=SYMBOLS, start_date=START.isoformat()),
        settings=settings,
        resources=resources,
    )
    instance = dg.DagsterInstance.ephemeral()
    result = ingest(defs, instance, START, END)
    assert result.success
    yield Stack(state_dir, settings, resources, defs, instance, result)
    instance.dispose()


@pytest.fixture(autouse=True)
def _virtufin_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test runs on embedded defaults in its own state folder unless it uses `stack`."""
    for key, value in env_for(tmp_path / "state").items():
        monkeypatch.setenv(key, value)
    for key in ("VIRTUFIN_SYMBOLS", "VIRTUFIN_MARKETDATA_SOURCE", "VIRTUFIN_SELECTOR"):
        monkeypatch.delenv(key, raising=False)
