"""The `virtufin` command: the composition root that wires core, adapters, pipelines and
services together. Each command lives in its own module exposing `register(subparsers)`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Final

from virtufin import __version__
from virtufin.errors import VirtufinError

__all__ = ["build_parser", "dispatch", "main"]

#: Command modules under `virtufin.cli`, in help order.
COMMANDS: Final = ("run", "backtest", "worker", "serve", "up", "ui", "config", "deploy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="virtufin",
        description="Event-driven trading: one worker code path for backtest and live.",
    )
    parser.add_argument("--version", action="version", version=f"virtufin {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"virtufin.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return dispatch(args, prog="virtufin")


def dispatch(args: argparse.Namespace, *, prog: str) -> int:
    """Run the parsed command's handler: a `VirtufinError` exits 2 with one line, Ctrl-C 130."""
    try:
        status: int = args.handler(args)
    except VirtufinError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
