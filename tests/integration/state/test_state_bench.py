"""The state benchmark runs and reports rows in the shape `bench/__main__.py` renders."""

from __future__ import annotations

import pytest

from bench.state_bench import TARGETS, run

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_quick_run_measures_every_adapter_beside_its_raw_client(
    postgres_dsn: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIRTUFIN_POSTGRES_DSN", postgres_dsn)
    monkeypatch.setenv("VIRTUFIN_REDIS_URL", redis_url)
    rows = run(quick=True)
    assert [row["name"] for row in rows] == list(TARGETS)
    for row in rows:
        assert set(row) == {
            "name",
            "value",
            "unit",
            "baseline_name",
            "baseline_value",
            "ratio",
            "target",
        }
        assert row["value"] > 0
        assert row["baseline_value"] > 0
        assert row["ratio"] == pytest.approx(row["value"] / row["baseline_value"])
        assert row["target"] == TARGETS[row["name"]]
