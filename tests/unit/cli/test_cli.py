"""The `virtufin` command: clear errors and exit codes (the main job: tests/acceptance)."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtufin.cli.main import main


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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--start", "2024-13-01"], "--start: '2024-13-01' is not a YYYY-MM-DD date"),
        (["run", "--start", "2024-05-01", "--end", "2024-01-01"], "--end: must be after --start"),
        (["run", "--data", "/no/such/folder"], "'/no/such/folder' is not a folder or a selector"),
        (["run", "--data", "NO_SUCH_SEL"], "no dataset for selector 'NO_SUCH_SEL'"),
    ],
)
def test_run_refuses_bad_flags_before_doing_anything(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
