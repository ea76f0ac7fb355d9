"""`virtufin backtest`: backtest a worker on a CSV/Parquet file, a dataset folder or a selector.

Defaults are backtesting.py's semantics (next bar's open, all-in whole units, exclusive
orders as the worker asks, commission a fraction of traded value, cash 10 000), so

    virtufin backtest --strategy sma_cross --param fast=10 --param slow=20 \\
        --data tests/fixtures/GOOG.csv --commission 0.002

reproduces backtesting.py's documented example. ``--json`` prints one JSON object with every
metric and the list of trades instead of the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "parse_param", "register"]


def parse_param(text: str) -> tuple[str, Any]:
    """``k=v`` with `v` read as JSON when it parses (numbers, booleans), else as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param takes key=value ({text!r})")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "backtest",
        help="backtest a worker on historical bars",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=_run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strategy",
        required=True,
        help="bundled worker name (sma_cross), manifest.json, file.py[:Class] or module:Class",
    )
    parser.add_argument(
        "--param", action="append", type=parse_param, default=[], metavar="K=V",
        help="worker parameter (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--data", required=True, help="CSV or Parquet file, dataset folder, or a selector"
    )
    parser.add_argument("--data-root", type=Path, help="where selectors live (VIRTUFIN_DATA_ROOT)")
    parser.add_argument("--symbol", action="append", dest="symbols", help="restrict symbols")
    parser.add_argument("--interval", help="bar interval of a file, e.g. 1d (default: inferred)")
    parser.add_argument("--fill", choices=("next-open", "close"), default="next-open")
    parser.add_argument("--commission", type=float, default=0.0, help="fraction of traded value")
    parser.add_argument("--commission-fixed", type=float, default=0.0, help="flat fee per fill")
    parser.add_argument("--slippage", type=float, default=0.0, help="fraction, against the order")
    parser.add_argument("--cash", type=float, default=10_000.0)
    parser.add_argument("--margin", type=float, default=1.0, help="margin ratio (1/leverage)")
    parser.add_argument("--finalize-trades", action="store_true", help="close positions at end")
    parser.add_argument("--warmup-bars", type=int, help="first tradable bar for Buy & Hold")
    parser.add_argument("--mode", choices=("event", "batch"), default="event")
    parser.add_argument("--run-id", help="run id (default: a fresh one)")
    parser.add_argument("--results", type=Path, help="write Parquet/JSON results here")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from virtufin.backtest import BacktestConfig, run_backtest
    from virtufin.errors import ConfigError

    try:
        config = _config(args, BacktestConfig)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(map(str, first["loc"]))
        raise ConfigError("command line", field, str(first["msg"])) from None
    result = run_backtest(
        args.strategy,
        args.data,
        params=dict(args.param),
        config=config,
        data_root=args.data_root,
        symbols=args.symbols,
        interval=args.interval,
    )
    return _report(args, result)


def _config(args: argparse.Namespace, config_class: Any) -> Any:
    return config_class(
        cash=args.cash,
        commission_rate=args.commission,
        commission_fixed=args.commission_fixed,
        slippage_rate=args.slippage,
        margin_ratio=args.margin,
        fill=args.fill,
        finalize_trades=args.finalize_trades,
        warmup_bars=args.warmup_bars,
        mode=args.mode,
        run_id=args.run_id,
        results_dir=args.results,
        keep_equity=False,
    )


def _report(args: argparse.Namespace, result: Any) -> int:
    if args.json:
        print(json.dumps(result.to_json(), indent=None, allow_nan=False))
        return 0
    print(result.stats.table())
    print(
        f"\n{result.bars} bars, {len(result.trades)} trades, worker {result.worker_id}, "
        f"scenario {result.scenario_id}, run {result.run_id}, "
        f"{result.elapsed_secs:.2f} s (replay {result.bars_per_sec:,.0f} bars/s)"
    )
    if result.worker_errors:
        print(f"warning: the worker failed on {result.worker_errors} events", file=sys.stderr)
    if result.results_dir is not None:
        print(f"results: {result.results_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m virtufin.cli.backtest …`` (the same options as ``virtufin backtest``)."""
    from virtufin.errors import VirtufinError

    parser = argparse.ArgumentParser(prog="virtufin backtest", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except VirtufinError as exc:
        print(f"virtufin: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
