"""`virtufin run`: the main job, on embedded defaults (no servers needed).

1. ingest a synthetic universe (or `--data` files) through the Dagster ingestion assets;
2. backtest the bundled strategies and a parameter sweep as scenarios (Dagster backtest assets);
3. run the promotion ladder: promote the best version that passes the gates, and show one
   that fails a gate with the reason;
4. start gateway, workmanager, marketdata and execution in this process and let the promoted
   strategy trade LIVE on a high-speed replay for a few seconds;
5. print a summary and write an HTML report (plots, promotion log) under the state folder.

Exit status 0 only when every stage did real work. Reruns are idempotent: partitions are
rewritten in place and earlier promotion decisions on the same data are reused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

from virtufin.config import Settings, load_settings
from virtufin.errors import ConfigError
from virtufin.lanes import is_valid_id

__all__ = ["USER_SELECTOR", "register", "summarise"]

DEFAULT_SYMBOLS: Final = "AAA,BBB,CCC"
DEFAULT_START: Final = "2024-01-01"
DEFAULT_END: Final = "2025-06-30"
USER_SELECTOR: Final = "USER_DATA"
_SWEEP: Final = ({"fast": 10, "slow": 20}, {"fast": 20, "slow": 50}, {"fast": 5, "slow": 30})


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run", help="run the main job: ingest, backtest, promote, trade live, report"
    )
    parser.add_argument("--symbols", default=DEFAULT_SYMBOLS, help="comma-separated symbols")
    parser.add_argument("--start", default=DEFAULT_START, help="first day (YYYY-MM-DD)")
    parser.add_argument("--end", default=DEFAULT_END, help="last day (YYYY-MM-DD)")
    parser.add_argument(
        "--data",
        help="your data instead of the synthetic universe: a folder of CSV/Parquet bar files "
        "(vendor layouts), or the selector of a dataset under the state folder",
    )
    parser.add_argument("--bus", choices=("memory", "nats"), help="event bus (default memory)")
    parser.add_argument(
        "--state", choices=("sqlite", "postgres", "redis"), help="state store (default sqlite)"
    )
    parser.add_argument("--live-seconds", type=float, default=4.0, help="length of the live stage")
    parser.add_argument("--no-live", action="store_true", help="skip the live stage")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or table")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=_run)


def _day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError("command line", flag, f"{text!r} is not a YYYY-MM-DD date") from None


@contextmanager
def _data_source(data: str | None, settings: Settings) -> Iterator[None]:
    """Point the ingestion at the user's data for the duration of the run.

    A folder is a drop folder of CSV/Parquet files; a selector names a hive dataset already
    under the state folder (``recorded/`` by the live recorder, or ``data/``), re-ingested
    through the same checks.
    """
    if data is None:
        yield
        return
    env: dict[str, str]
    path = Path(data)
    if path.is_dir():
        env = {
            "VIRTUFIN_MARKETDATA_SOURCE": "drop_folder",
            "VIRTUFIN_DROP_FOLDER": str(path.resolve()),
            # filed apart from the synthetic universe
            "VIRTUFIN_SELECTOR": os.environ.get("VIRTUFIN_SELECTOR", USER_SELECTOR),
        }
    elif is_valid_id(data):
        root = next(
            (
                r
                for r in (settings.state_dir / "recorded", settings.state_dir / "data")
                if (r / f"selector={data}").is_dir()
            ),
            None,
        )
        if root is None:
            raise ConfigError(
                "command line",
                "--data",
                f"no dataset for selector {data!r} under {settings.state_dir}",
            )
        env = {
            "VIRTUFIN_MARKETDATA_SOURCE": "recorded",
            "VIRTUFIN_RECORDED_ROOT": str(root),
            "VIRTUFIN_RECORDED_SELECTOR": data,
            "VIRTUFIN_SELECTOR": data,
        }
    else:
        raise ConfigError("command line", "--data", f"{data!r} is not a folder or a selector")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _Progress:
    """Rich progress bars, one per stage; silent with --quiet or --json."""

    def __init__(self, enabled: bool) -> None:
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        if enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                TextColumn("{task.completed:>4.0f}/{task.total:<4.0f}"),
                TimeElapsedColumn(),
                transient=False,
            )

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, stage: str, done: float, total: float) -> None:
        if self._bar is None:
            return
        labels = {
            "ingest": "ingest market data",
            "backtest": "backtest scenarios",
            "promote": "promotion ladder",
            "live": "live trading (sc.LIVE)",
        }
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(labels.get(stage, stage), total=total)
        self._bar.update(self._tasks[stage], completed=done, total=total)


def _specs(symbols: list[str], start: date, end: date, selector: str) -> list[Any]:
    from pipelines.backtest.specs import BacktestSpec

    return [
        BacktestSpec(
            worker="sma_cross",
            selector=selector,
            commission_rate=0.001,
            paper_sessions=189,  # evidence windows long enough for slow SMAs to trade
            shadow_sessions=126,
            params=params,
            symbols=(symbol,),
            start=start,
            end=end,
        )
        for symbol in symbols
        for params in _SWEEP
    ]


def summarise(
    report: Any, live: dict[str, Any] | None, settings: Settings, args: argparse.Namespace
) -> dict[str, Any]:
    """The machine-readable summary (also what the HTML report renders)."""
    from pipelines.promotion.log import read_log
    from pipelines.resources import resources_for

    state = resources_for(settings)["state"]
    ingest = report.ingestion
    return {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bus": settings.bus,
        "state": settings.state,
        "state_dir": str(settings.state_dir),
        "symbols": [s for s in args.symbols.split(",") if s],
        "start": args.start,
        "end": args.end,
        "ingestion": {
            "rows": ingest.get("rows_stored"),
            "quarantined": ingest.get("rows_quarantined", 0),
            "data_root": str(report.data_root),
            "failed_checks": report.failed_ingestion_checks,
        },
        "scenarios": [
            {
                "scenario_id": b.scenario_id,
                "strategy": b.spec.strategy_id,
                "params": b.spec.params,
                "symbols": list(b.spec.symbols),
                "success": b.success,
                "return_pct": b.metrics.get("return_pct"),
                "sharpe": b.metrics.get("sharpe_ratio"),
                "max_drawdown_pct": b.metrics.get("max_drawdown_pct"),
                "trades": b.metrics.get("trades"),
                "failed_checks": b.failed_checks,
                "plot": b.plot,
                "results_dir": b.results_dir,
            }
            for b in report.backtests
        ],
        "winner": report.winner,
        "reached": report.reached,
        "promotions": [p.to_json() for p in report.promotions],
        "promotion_log": state.run(read_log),
        "live": live,
    }


def _print_summary(summary: dict[str, Any], report_path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="Backtests (Dagster backtest assets)")
    for column in ("scenario", "fast/slow", "symbol", "return %", "Sharpe", "max DD %", "trades"):
        table.add_column(
            column, justify="right" if "%" in column or column in ("Sharpe", "trades") else "left"
        )
    for s in summary["scenarios"]:
        table.add_row(
            s["scenario_id"],
            "/".join(str(v) for v in s["params"].values()),
            ", ".join(s["symbols"]),
            f"{s['return_pct']:.2f}" if s["return_pct"] is not None else "-",
            f"{s['sharpe']:.2f}" if s["sharpe"] is not None else "-",
            f"{s['max_drawdown_pct']:.2f}" if s["max_drawdown_pct"] is not None else "-",
            str(s["trades"]),
        )
    console.print(table)
    promo = Table(title="Promotion ladder (backtest → paper → shadow → LIVE)")
    for column in ("scenario", "reached", "decision"):
        promo.add_column(column)
    for p in summary["promotions"]:
        if p["reached"] == "LIVE":
            decision = "[green]promoted to LIVE[/green]"
        else:
            why = "; ".join(
                f"{c['name']} {c['actual']:.3g} vs {c['threshold']}"
                if isinstance(c.get("actual"), int | float)
                else c["name"]
                for c in p["failed_checks"]
            )
            decision = f"[red]refused at {p['refused_at']}[/red]: {why}"
        promo.add_row(
            p["scenario_id"], p["reached"], decision + (" (earlier run)" if p["reused"] else "")
        )
    console.print(promo)
    live = summary["live"]
    if live:
        console.print(
            f"Live: {live['worker']} {json.dumps(live['params'])} on {live['symbol']}: "
            f"{live['bars']} bars replayed onto act lanes, {live['orders']} orders, "
            f"{live['fills']} fills on sc.LIVE in {live['seconds']} s"
        )
    console.print(f"Report: {report_path}")


def _story(args: argparse.Namespace) -> tuple[dict[str, Any], Path, list[str]]:
    from pipelines import run_pipeline
    from pipelines.resources import resources_for
    from virtufin.reporting import write_report

    settings = load_settings(flags={"bus": args.bus, "state": args.state})
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    start, end = _day(args.start, "--start"), _day(args.end, "--end")
    if end <= start:
        raise ConfigError("command line", "--end", "must be after --start")
    problems: list[str] = []
    with _Progress(not (args.quiet or args.json)) as progress, _data_source(args.data, settings):
        selector = resources_for(settings)["market_data"].selector
        report = run_pipeline(
            start=start,
            end=end,
            symbols=symbols,
            specs=_specs(symbols, start, end, selector),
            settings=settings,
            progress=progress.update,
            log_level="DEBUG" if args.verbose else "CRITICAL",  # the summary says what matters
        )
        if not report.ingestion.get("rows_stored"):
            problems.append("ingestion stored no bars")
        if not report.backtests or not all(b.success for b in report.backtests):
            problems.append("a backtest run failed")
        if report.reached != "LIVE":
            problems.append(f"no version reached LIVE (best stopped at {report.reached})")
        live = None
        winner = next((p for p in report.promotions if p.reached == "LIVE"), None)
        if winner is not None and not args.no_live:
            spec = next(b.spec for b in report.backtests if b.scenario_id == winner.scenario_id)
            live = asyncio.run(
                _live_stage(settings, spec, report.data_root, selector, args, progress)
            )
            if not live["bars"] or not live["orders"]:
                problems.append("the live stage traded nothing")
    summary = summarise(report, live, settings, args)
    summary["seconds"] = round(time.monotonic() - args.started, 1)
    path = write_report(settings.state_dir / "reports", summary)
    return summary, path, problems


async def _live_stage(
    settings: Settings,
    spec: Any,
    data_root: Path,
    selector: str,
    args: argparse.Namespace,
    progress: _Progress,
) -> dict[str, Any]:
    from virtufin.cli.live_stage import run_live_stage

    return await run_live_stage(
        settings=settings,
        params=dict(spec.params),
        symbol=spec.symbols[0],
        data_root=data_root,
        selector=selector,
        seconds=args.live_seconds,
        progress=lambda done, total: progress.update("live", done, total),
    )


def _run(args: argparse.Namespace) -> int:
    args.started = time.monotonic()
    summary, path, problems = _story(args)
    summary["seconds"] = round(time.monotonic() - args.started, 1)
    summary["report"] = str(path)
    summary["problems"] = problems
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    elif not args.quiet:
        _print_summary(summary, path)
    else:
        print(path)
    for problem in problems:
        print(f"virtufin run: {problem}", file=sys.stderr)
    return 1 if problems else 0
