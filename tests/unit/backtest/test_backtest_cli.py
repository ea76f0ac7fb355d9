"""`virtufin backtest` options and errors (the golden runs are in tests/acceptance)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from virtufin.cli.backtest import main, parse_param, register

GOOG = Path(__file__).resolve().parents[2] / "fixtures" / "GOOG.csv"


def test_params_are_json_when_they_parse() -> None:
    assert parse_param("fast=10") == ("fast", 10)
    assert parse_param("ratio=0.5") == ("ratio", 0.5)
    assert parse_param("flag=true") == ("flag", True)
    assert parse_param("name=abc") == ("name", "abc")
    with pytest.raises(argparse.ArgumentTypeError):
        parse_param("novalue")


def test_registers_the_backtest_command() -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["backtest", "--strategy", "sma_cross", "--data", "x.csv"])
    assert (args.command, args.fill, args.cash, args.commission) == (
        "backtest", "next-open", 10_000.0, 0.0,
    )  # fmt: skip
    assert callable(args.handler)


def test_json_output_and_results_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "--strategy", "virtufin.backtest.testkit:SmaCrossReference",
            "--param", "fast=10", "--param", "slow=20", "--data", str(GOOG),
            "--commission", "0.002", "--fill", "close", "--results", str(tmp_path), "--json",
        ]
    )  # fmt: skip
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["config"]["fill"] == "close"
    assert report["metrics"]["trades"] == len(report["trades"]) > 80
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"] == report["metrics"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--strategy", "no_such_worker", "--data", str(GOOG)], "no bundled worker"),
        (["--strategy", "sma_cross", "--data", "missing.csv"], "neither a data file"),
        (["--strategy", "sma_cross", "--data", str(GOOG), "--commission", "0.5"], "commission"),
        (["--strategy", "sma_cross", "--data", str(GOOG), "--param", "fast=30"], "fast"),
    ],
)
def test_errors_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
