"""The main job (`virtufin run`, what `make run` calls) end to end on embedded defaults:
ingestion, backtests, promotion, live trading, report; and a rerun that duplicates nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(state_dir: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "virtufin.cli.main",
            "run",
            "--json",
            "--symbols",
            "AAA,BBB",
            *extra,
        ],
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "VIRTUFIN_STATE_DIR": str(state_dir),
            "HOME": str(state_dir),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def first_and_second(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, Path]:
    state = tmp_path_factory.mktemp("state")
    return _run(state), _run(state), state


def test_every_stage_does_real_work(first_and_second: tuple[dict, dict, Path]) -> None:
    summary, _, state = first_and_second
    assert summary["problems"] == []
    assert summary["ingestion"]["rows"] > 2 * 300  # two symbols, 18 months of sessions
    assert summary["ingestion"]["failed_checks"] == []
    assert len(summary["scenarios"]) == 6
    assert all(s["success"] and s["trades"] > 0 for s in summary["scenarios"])
    assert all(Path(s["plot"]).is_file() for s in summary["scenarios"])
    assert summary["reached"] == "LIVE"
    decisions = [p for p in summary["promotions"]]
    assert any(p["reached"] == "LIVE" for p in decisions)
    refused = [p for p in decisions if p["refused_at"] is not None]
    assert refused, "the report must show a version that fails a gate"
    assert all(p["failed_checks"] for p in refused)
    live = summary["live"]
    assert live["bars"] > 0
    assert live["orders"] > 0
    assert live["fills"] >= live["orders"]
    assert all(e["scenarioid"] == "LIVE" for e in live["events"])
    assert all(e["topic"].startswith("sc.LIVE.trading.") for e in live["events"])
    assert Path(summary["report"]).is_file()
    assert Path(summary["report"]).parent == state / "reports"


def test_the_report_embeds_the_plots_and_the_promotion_log(
    first_and_second: tuple[dict, dict, Path],
) -> None:
    summary = first_and_second[0]
    text = Path(summary["report"]).read_text()
    assert text.count("data:image/png;base64,") == len(summary["scenarios"])
    for entry in summary["promotion_log"]:
        assert entry["scenario"] in text
    assert "Live (sc.LIVE)" in text


def test_a_rerun_duplicates_no_partition_or_promotion(
    first_and_second: tuple[dict, dict, Path],
) -> None:
    first, second, _ = first_and_second
    assert second["problems"] == []
    assert second["ingestion"]["rows"] == first["ingestion"]["rows"]
    assert [s["scenario_id"] for s in second["scenarios"]] == [
        s["scenario_id"] for s in first["scenarios"]
    ]
    assert all(p["reused"] for p in second["promotions"])
    assert second["promotion_log"] == first["promotion_log"]


def test_the_report_renders_its_plots_in_headless_chromium(
    first_and_second: tuple[dict, dict, Path], tmp_path: Path
) -> None:
    """Open the report as a person would and check the screenshot shows the plots."""
    import shutil

    from PIL import Image

    browser = shutil.which("chromium")
    assert browser is not None, "chromium is missing: apt-get install chromium (make test does)"
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            Path(first_and_second[0]["report"]).as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2400)
    colours = image.getcolors(maxcolors=1_000_000) or []
    # text alone gives a handful of greys; the equity (blue) and drawdown (red) plots add
    # thousands of anti-aliased shades
    assert len(colours) > 1000
    blue = sum(n for n, (r, g, b) in colours if b > 150 and r < 100)
    red = sum(n for n, (r, g, b) in colours if r > 200 and g < 180 and b < 180)
    assert blue > 500
    assert red > 500


@pytest.mark.nats
@pytest.mark.postgres
def test_the_same_story_runs_on_nats_and_postgres(
    tmp_path: Path, nats_server: str, postgres_dsn: str
) -> None:
    """`--bus nats --state postgres`: the live services talk over the real broker and every
    scenario, order and promotion decision lands in a fresh PostgreSQL database."""
    import uuid

    import psycopg

    database = f"vf_main_{uuid.uuid4().hex[:10]}"
    admin = postgres_dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {database}")
    try:
        dsn = postgres_dsn.rsplit("/", 1)[0] + f"/{database}"
        summary = _run(
            tmp_path,
            "--bus",
            "nats",
            "--state",
            "postgres",
            env={"VIRTUFIN_POSTGRES_DSN": dsn, "VIRTUFIN_NATS_URL": nats_server},
        )
        assert (summary["bus"], summary["state"]) == ("nats", "postgres")
        assert summary["problems"] == []
        assert summary["reached"] == "LIVE"
        assert summary["live"]["orders"] > 0
        assert summary["live"]["fills"] > 0
        with psycopg.connect(dsn) as conn:
            keys = [row[0] for row in conn.execute("SELECT key FROM virtufin_state")]
        assert "scenario.LIVE" in keys
        assert sum(k.startswith("promotion.log.") for k in keys) == len(summary["promotion_log"])
        assert any(k.startswith("sc.LIVE.trading.order.") for k in keys)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_users_own_files_replace_the_synthetic_universe(tmp_path: Path) -> None:
    """`--data <folder>`: real GOOG bars in the common vendor CSV layout are ingested under
    their own selector, checked and backtested; `--data <selector>` reuses that dataset."""
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "GOOG.csv").write_text((REPO / "tests/fixtures/GOOG.csv").read_text())
    state = tmp_path / "state"
    args = ["--symbols", "GOOG", "--start", "2010-01-04", "--end", "2011-12-30", "--no-live"]
    for data in (str(drop), "USER_DATA"):
        done = subprocess.run(
            [sys.executable, "-m", "virtufin.cli.main", "run", "--json", "--data", data, *args],
            cwd=REPO,
            env={"PATH": "/usr/bin:/bin", "VIRTUFIN_STATE_DIR": str(state), "HOME": str(state)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        summary = json.loads(done.stdout)
        assert summary["ingestion"]["rows"] == 504  # NYSE sessions of 2010 and 2011
        assert summary["ingestion"]["failed_checks"] == []
        assert all(s["success"] and s["trades"] > 0 for s in summary["scenarios"])
        assert not any("ingestion" in p or "backtest" in p for p in summary["problems"])
        # exit status 0 only if every stage did real work; here the ladder may stop early
        assert done.returncode == (0 if not summary["problems"] else 1)
    assert [p.name for p in (state / "data").iterdir()] == ["selector=USER_DATA"]
