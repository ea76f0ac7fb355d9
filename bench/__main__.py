"""`make bench`: run every benchmark suite and write `bench/RESULTS.md`.

Each suite module exposes `run(quick: bool = False) -> list[dict]` returning rows
`{"name", "value", "unit", "baseline_name", "baseline_value", "ratio", "target"}`, every figure
measured beside its baseline in the same process, so ratios hold on any machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

SUITES = (
    "bench.bus_bench",
    "bench.state_bench",
    "bench.engine_bench",
    "bench.backtest_bench",
    "bench.pipelines_bench",
    "bench.gateway_bench",
    "bench.live_bench",
)
RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def render(rows: list[tuple[str, dict[str, Any]]], failures: list[str], seconds: float) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC "
        f"in {seconds:.0f} s.",
        f"Machine: {machine()}.",
        "",
        "Every figure is measured beside its baseline in the same run; the ratio is "
        "figure ÷ baseline (for times, lower is better; for rates, higher is better).",
        "",
        "| suite | measurement | value | unit | baseline | baseline value | ratio | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for suite, row in rows:
        lines.append(
            "| "
            + " | ".join(
                _fmt(x)
                for x in (
                    suite.removeprefix("bench.").removesuffix("_bench"),
                    row.get("name"),
                    row.get("value"),
                    row.get("unit"),
                    row.get("baseline_name"),
                    row.get("baseline_value"),
                    row.get("ratio"),
                    row.get("target"),
                )
            )
            + " |"
        )
    if failures:
        lines += ["", "## Suites that did not run", ""]
        lines += [f"- {failure}" for failure in failures]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", action="append", help="suite module name(s) to run")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows: list[tuple[str, dict[str, Any]]] = []
    failures: list[str] = []
    for suite in SUITES:
        if args.only and not any(o in suite for o in args.only):
            continue
        try:
            module = importlib.import_module(suite)
        except ModuleNotFoundError as exc:
            if exc.name == suite:
                failures.append(f"`{suite}`: not present in this checkout")
                continue
            raise
        print(f"bench: {suite} …", file=sys.stderr, flush=True)
        try:
            for row in module.run(quick=args.quick):
                rows.append((suite, row))
                print(
                    f"  {row['name']}: {_fmt(row['value'])} {row.get('unit', '')} "
                    f"(ratio {_fmt(row.get('ratio'))})",
                    file=sys.stderr,
                    flush=True,
                )
        except Exception:
            failures.append(f"`{suite}` failed:\n\n```\n{traceback.format_exc()}```")
            print(traceback.format_exc(), file=sys.stderr)
    RESULTS.write_text(render(rows, failures, time.perf_counter() - started))
    print(f"bench: wrote {RESULTS}", file=sys.stderr)
    return 1 if any("failed" in f for f in failures) else 0


if __name__ == "__main__":
    sys.exit(main())
