"""`virtufin ui`: the Dagster UI on the embedded instance (``dagster dev -m pipelines``).

``DAGSTER_HOME`` is ``<state_dir>/dagster``; its ``dagster.yaml`` (SQLite storage, written on
first use) is the same instance `pipelines.run_pipeline(persist=True)` records runs in. The
child gets SIGINT and SIGTERM restored to their defaults (a parent that ignores them, e.g. a
shell job, would otherwise pass that on and ``dagster dev`` would never stop); Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from virtufin.config import Settings, load_settings, project_root

__all__ = ["build_command", "register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ui", help="start the Dagster UI (dagster dev -m pipelines) on the embedded instance"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the UI listens on")
    parser.add_argument("--port", type=int, default=3000, help="port of the UI")
    parser.add_argument(
        "--print-command", action="store_true", help="print the command and environment only"
    )
    parser.set_defaults(handler=_run)


def _dagster_executable() -> str:
    beside = Path(sys.executable).with_name("dagster")
    if beside.exists():
        return str(beside)
    return shutil.which("dagster") or "dagster"


def build_command(
    settings: Settings, *, host: str = "127.0.0.1", port: int = 3000
) -> tuple[list[str], dict[str, str]]:
    """The ``dagster dev`` argv and environment for `settings` (writes the instance config).

    Example:
        >>> argv, env = build_command(load_settings())  # doctest: +SKIP
        >>> argv[1:4]  # doctest: +SKIP
        ['dev', '-m', 'pipelines']
    """
    from pipelines.instance import ensure_dagster_home

    home = ensure_dagster_home(settings.state_dir)
    root = project_root()
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(home)
    env["VIRTUFIN_STATE_DIR"] = str(settings.state_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    argv = [
        _dagster_executable(),
        "dev",
        "-m",
        "pipelines",
        "--working-directory",
        str(root),
        "--host",
        host,
        "--port",
        str(port),
    ]
    return argv, env


def _restore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run(args: argparse.Namespace) -> int:
    argv, env = build_command(load_settings(), host=args.host, port=args.port)
    if args.print_command:
        shown: Mapping[str, str] = {k: env[k] for k in ("DAGSTER_HOME", "VIRTUFIN_STATE_DIR")}
        print(" ".join(argv))
        for key, value in shown.items():
            print(f"{key}={value}")
        return 0
    print(f"Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={env['DAGSTER_HOME']})")
    child = subprocess.Popen(argv, env=env, preexec_fn=_restore_signals)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        try:
            return child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.terminate()
            return child.wait()
