"""``virtufin worker test``: as a module (subprocess) and through `register` (argparse)."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from virtufin.cli import worker as worker_cli
from virtufin.envelope import decode

ROOT = Path(__file__).resolve().parents[3]
BARS = str(ROOT / "tests" / "fixtures" / "bars_small.jsonl")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "virtufin.cli.worker", "test", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_registered(*args: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="virtufin")
    worker_cli.register(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args(["worker", "test", *args])
    out, err = io.StringIO(), io.StringIO()
    status = parsed.handler(parsed, out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_module_invocation_prints_envelopes_and_a_summary():
    done = run_cli("workers/sma_cross/script.py", "--events", BARS, "--param", "fast=5")
    assert done.returncode == 0, done.stderr
    outputs = [decode(line) for line in done.stdout.splitlines()]
    assert len(outputs) >= 6
    assert {o.type for o in outputs} == {"com.virtufin.trading.order.submitted"}
    assert outputs[0].data["reason"].startswith("fast SMA(5) crossed ")
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith("worker sma_cross_script (text/x-python, PythonScriptEngine):")
    assert f"events in 300, events out {len(outputs)}, errors 0, mean " in summary
    assert summary.endswith("µs/event")


def test_load_failures_exit_2_with_a_clear_message(native_build, cworkers):
    done = run_cli("no.such.module:Worker", "--events", BARS)
    assert done.returncode == 2
    assert "cannot load worker 'worker': cannot import no.such.module:Worker" in done.stderr
    status, out, err = run_registered(str(cworkers["bad_abi"]), "--events", BARS)
    assert (status, out) == (2, "")
    assert "built for native ABI version 2" in err


@pytest.mark.parametrize(
    "target",
    [
        "workers/sma_cross/manifest.json",
        "workers.sma_cross.worker:SmaCross",
        "native/build/libsma_cross.so",
        "native/build/libsma_cross.manifest.json",
    ],
)
def test_every_target_form_runs_through_its_engine(native_build, target, monkeypatch):
    monkeypatch.chdir(ROOT)
    status, out, err = run_registered(target, "--events", BARS)
    assert status == 0, err
    sides = [json.loads(line)["data"]["side"] for line in out.splitlines()]
    assert sides[:3] == ["buy", "sell", "buy"]
    assert len(sides) == 9


def test_safe_mode_and_batches(native_build, monkeypatch):
    monkeypatch.chdir(ROOT)
    status, out, err = run_registered(
        "native/build/libsma_cross.so", "--safe-mode", "--events", BARS
    )
    assert status == 0
    assert "NativeSafeEngine" in err
    assert len(out.splitlines()) == 9
    status, out, err = run_registered(
        "workers/sma_cross/script.py", "--batch", "64", "--events", BARS
    )
    assert status == 0
    assert len(out.splitlines()) == 9


def test_parameter_errors_name_the_fields(monkeypatch):
    monkeypatch.chdir(ROOT)
    status, _, err = run_registered(
        "workers/sma_cross/manifest.json", "--param", "fast=30", "--param", "slow=20",
        "--events", BARS,
    )  # fmt: skip
    assert status == 2
    assert "fast (30) must be less than slow (20)" in err


def test_failed_events_exit_1_and_are_reported(tmp_path, monkeypatch):
    script = tmp_path / "picky.py"
    script.write_text(
        "def Process(event):\n"
        "    if event['data']['close'] > 120:\n"
        "        raise ValueError('too expensive')\n"
        "    return None\n"
    )
    status, out, err = run_registered(str(script), "--events", BARS)
    assert status == 1
    assert out == ""
    assert "error: event bar-SMALL-BTCUSDT-" in err
    assert "too expensive" in err
    assert ", errors 0," not in err


def test_unreadable_events_and_bad_params_are_usage_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"specversion": "1.0"}\n')
    status, _, err = run_registered("workers/echo/manifest.json", "--events", str(bad))
    assert status == 2
    assert f"{bad}:1: invalid envelope" in err
    status, _, err = run_registered("workers/echo/manifest.json", "--param", "x", "--events", BARS)
    assert status == 2
    assert "expected KEY=VALUE" in err


def test_param_values_are_json_when_they_parse():
    assert worker_cli.parse_params(["a=5", "b=true", "c=hello", "d=[1,2]", "e=a=b"]) == {
        "a": 5,
        "b": True,
        "c": "hello",
        "d": [1, 2],
        "e": "a=b",
    }
