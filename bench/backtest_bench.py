"""Backtest benchmark: the event-driven engine and the batch path beside their baselines.

- ``backtest.event bars/s``: the whole event-driven path (replay → bus → in-process Python SMA
  worker hosted by the runtime → venue → portfolio → equity/stats) on synthetic one-minute
  bars, against backtesting.py running its own SMA-crossover example on the same bars in the
  same run. Targets: ≥ 200 000 bars/s and ≥ 20× backtesting.py.
- ``backtest.event bars/s (bundled sma_cross)``: the same with the bundled class worker.
- ``backtest.batch bars/s``: the columnar path (``on_batch`` → venue → portfolio → stats)
  against a plain numpy computation of the same crossover signals. Target: within 2×
  (ratio ≥ 0.5). ``backtest.batch on_batch signals bars/s``: the worker's ``on_batch`` alone
  (signals and its columnar `OrderBatch` decisions) against the same numpy.
  ``backtest.batch native OnBatch signals bars/s``: the C ``sma_cross``'s ``OnBatch`` through
  the native engine (each batch exported zero-copy through the Arrow C data interface, the
  decisions copied back as numpy order columns) against the same numpy. Target: within 2×.
  ``backtest.batch == event trades`` checks both paths trade identically;
  ``backtest.batch native == event trades`` the same for the C worker.
- ``backtest.peak RSS @N`` and ``backtest.tracemalloc peak @N``: memory of a replay of N bars
  streamed from a generator (nothing held whole), each in a fresh process, against N = 10⁵.
  Flat memory means a ratio near 1 (target ≤ 1.5).

The ratio is value ÷ baseline. Run: ``python -m bench.backtest_bench [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa

from bench.rows import bench_row
from virtufin.backtest import BacktestConfig, TableBars, run_backtest
from virtufin.backtest.testkit import (
    SmaCrossConfig,
    SmaCrossReference,
    SyntheticBars,
    synthetic_bars,
)
from workers.kit import WorkerContext

__all__ = ["TARGETS", "run"]

REFERENCE: Final = "virtufin.backtest.testkit:SmaCrossReference"
NATIVE_MANIFEST: Final = "native/build/libsma_cross.manifest.json"
FAST, SLOW = 10, 20
TARGETS: Final[dict[str, str]] = {
    "backtest.event bars/s": "≥ 200000 bars/s and ≥ 20",
    "backtest.event bars/s (bundled sma_cross)": "≥ 20",
    "backtest.batch bars/s": "≥ 0.5",
    "backtest.batch on_batch signals bars/s": "≥ 0.5",
    "backtest.batch native OnBatch signals bars/s": "≥ 0.5",
    "backtest.batch == event trades": "= 1",
    "backtest.batch native == event trades": "= 1",
    "backtest.peak RSS": "≤ 1.5",
    "backtest.tracemalloc peak": "≤ 1.5",
}
_ROOT: Final = Path(__file__).resolve().parent.parent


def _config(**overrides: Any) -> BacktestConfig:
    return BacktestConfig(commission_rate=0.002, keep_equity=False, **overrides)


# --------------------------------------------------------------------------- baselines


def backtesting_py_bars_per_sec(table: pa.Table) -> tuple[float, int]:
    """backtesting.py's documented SmaCross on `table`'s bars: (bars/s of `run`, trades)."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bar on the bench's output
    import pandas as pd
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class SmaCross(Strategy):
        n1 = FAST
        n2 = SLOW

        def init(self) -> None:
            self.sma1 = self.I(SMA, self.data.Close, self.n1)
            self.sma2 = self.I(SMA, self.data.Close, self.n2)

        def next(self) -> None:
            if crossover(self.sma1, self.sma2):
                self.buy()
            elif crossover(self.sma2, self.sma1):
                self.sell()

    frame = pd.DataFrame(
        {
            "Open": table.column("open").to_numpy(),
            "High": table.column("high").to_numpy(),
            "Low": table.column("low").to_numpy(),
            "Close": table.column("close").to_numpy(),
            "Volume": table.column("volume").to_numpy(),
        },
        index=pd.to_datetime(table.column("ts").to_numpy()),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backtest = Backtest(frame, SmaCross, cash=10_000, commission=0.002, exclusive_orders=True)
        started = time.perf_counter()
        stats = backtest.run()
        elapsed = time.perf_counter() - started
    return table.num_rows / elapsed, int(stats["# Trades"])


def numpy_signals_secs(table: pa.Table, repeats: int = 5) -> tuple[float, int]:
    """Plain numpy: the same crossover signals (cumulative-sum SMAs), best of `repeats`."""
    best, count = float("inf"), 0
    for _ in range(repeats):
        started = time.perf_counter()
        close = table.column("close").to_numpy()
        total = np.concatenate(([0.0], np.cumsum(close)))
        fast = (total[SLOW:] - total[SLOW - FAST : -FAST]) / FAST
        slow = (total[SLOW:] - total[:-SLOW]) / SLOW
        buys = (fast[:-1] < slow[:-1]) & (fast[1:] > slow[1:])
        sells = (slow[:-1] < fast[:-1]) & (slow[1:] > fast[1:])
        signals = np.flatnonzero(buys | sells)
        best = min(best, time.perf_counter() - started)
        count = len(signals)
    return best, count


def on_batch_secs(table: pa.Table, batch_rows: int = 16_384, repeats: int = 5) -> float:
    """The reference worker's ``on_batch`` alone over `table` (signals and `OrderBatch`es),
    best of `repeats` fresh workers (as the numpy baseline is best of its repeats)."""
    batches = table.to_batches(max_chunksize=batch_rows)
    best = float("inf")
    for _ in range(repeats):
        worker = SmaCrossReference()
        ctx = WorkerContext(worker_id="bench", config=SmaCrossConfig(fast=FAST, slow=SLOW))
        worker.ctx = ctx
        worker.on_start(ctx)
        started = time.perf_counter()
        for batch in batches:
            worker.on_batch(batch)
            ctx.take_emitted()
        best = min(best, time.perf_counter() - started)
    return best


def native_on_batch_secs(table: pa.Table, batch_rows: int = 16_384, repeats: int = 5) -> float:
    """The C ``sma_cross``'s ``OnBatch`` alone over `table`, through the native engine (export,
    call, order columns back), best of `repeats` fresh instances."""
    from virtufin.runtime.factory import create_engine
    from virtufin.runtime.manifest import WorkerManifest

    manifest = WorkerManifest.load(_ROOT / NATIVE_MANIFEST)
    batches = table.to_batches(max_chunksize=batch_rows)
    best = float("inf")
    for _ in range(repeats):
        with create_engine(manifest, params={"fast": FAST, "slow": SLOW}) as engine:
            on_batch = engine.on_batch  # type: ignore[attr-defined]
            started = time.perf_counter()
            for batch in batches:
                on_batch(batch)
            best = min(best, time.perf_counter() - started)
    return best


def _build_native() -> None:
    subprocess.run(["make", "-s", "-C", str(_ROOT / "native")], check=True, timeout=300)


# --------------------------------------------------------------------------- memory


def memory_probe(bars: int, mode: str, trace: bool) -> dict[str, float]:
    """One replay of `bars` streamed bars in this process: peak RSS and tracemalloc (MiB)."""
    import tracemalloc

    if trace:
        tracemalloc.start()
    with tempfile.TemporaryDirectory() as folder:
        run_backtest(
            REFERENCE,
            SyntheticBars(bars),
            params={"fast": FAST, "slow": SLOW},
            config=_config(mode=mode, results_dir=Path(folder), keep_trades=False),
        )
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else float("nan")
    return {"rss_mib": _peak_rss_mib(), "traced_mib": traced}


def _peak_rss_mib() -> float:
    """This process's peak RSS (``VmHWM``; `ru_maxrss` would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _probe(bars: int, mode: str, trace: bool) -> dict[str, float]:
    code = (
        "import json; from bench.backtest_bench import memory_probe; "
        f"print(json.dumps(memory_probe({bars}, {mode!r}, {trace})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=_ROOT, capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- suite


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure the engine beside its baselines; rows as `bench/__main__.py` expects."""
    rows: list[dict[str, Any]] = []
    n = 100_000 if quick else 1_000_000
    table = synthetic_bars(n)
    source = TableBars(table)
    params = {"fast": FAST, "slow": SLOW}

    peer_rate, peer_trades = backtesting_py_bars_per_sec(table)
    event = run_backtest(REFERENCE, source, params=params, config=_config())
    assert len(event.trades) in (peer_trades, peer_trades + 1), (len(event.trades), peer_trades)
    rows.append(
        bench_row(
            "backtest.event bars/s",
            event.bars_per_sec,
            "bars/s",
            "backtesting.py run()",
            peer_rate,
            TARGETS["backtest.event bars/s"],
        )
    )
    bundled = run_backtest("sma_cross", source, params=params, config=_config())
    rows.append(
        bench_row(
            "backtest.event bars/s (bundled sma_cross)",
            bundled.bars_per_sec,
            "bars/s",
            "backtesting.py run()",
            peer_rate,
            TARGETS["backtest.event bars/s (bundled sma_cross)"],
        )
    )

    batch = run_backtest(REFERENCE, source, params=params, config=_config(mode="batch"))
    numpy_secs, _ = numpy_signals_secs(table)
    rows.append(
        bench_row(
            "backtest.batch bars/s",
            batch.bars_per_sec,
            "bars/s",
            "numpy signals",
            n / numpy_secs,
            TARGETS["backtest.batch bars/s"],
        )
    )
    rows.append(
        bench_row(
            "backtest.batch on_batch signals bars/s",
            n / on_batch_secs(table),
            "bars/s",
            "numpy signals",
            n / numpy_secs,
            TARGETS["backtest.batch on_batch signals bars/s"],
        )
    )
    _build_native()
    rows.append(
        bench_row(
            "backtest.batch native OnBatch signals bars/s",
            n / native_on_batch_secs(table),
            "bars/s",
            "numpy signals",
            n / numpy_secs,
            TARGETS["backtest.batch native OnBatch signals bars/s"],
        )
    )

    def trades(result: Any) -> list[tuple[int, int, float, float]]:
        return [(t.entry_bar, t.exit_bar, t.size, t.pnl) for t in result.trades]

    rows.append(
        bench_row(
            "backtest.batch == event trades",
            float(trades(batch) == trades(event)),
            "bool",
            "event path",
            1.0,
            TARGETS["backtest.batch == event trades"],
        )
    )
    native = _ROOT / NATIVE_MANIFEST
    native_runs = [
        run_backtest(str(native), source, params=params, config=_config(mode=mode))
        for mode in ("event", "batch")
    ]
    rows.append(
        bench_row(
            "backtest.batch native == event trades",
            float(trades(native_runs[1]) == trades(native_runs[0]) == trades(event)),
            "bool",
            "event path",
            1.0,
            TARGETS["backtest.batch native == event trades"],
        )
    )

    sizes = (100_000, 1_000_000) if quick else (100_000, 1_000_000, 10_000_000)
    rss = {size: _probe(size, "event", trace=False)["rss_mib"] for size in sizes}
    traced = {size: _probe(size, "batch", trace=True)["traced_mib"] for size in sizes}
    for size in sizes[1:]:
        rows.append(
            bench_row(
                f"backtest.peak RSS @{size:.0e} bars (event)",
                rss[size],
                "MiB",
                f"@{sizes[0]:.0e} bars",
                rss[sizes[0]],
                TARGETS["backtest.peak RSS"],
            )
        )
        rows.append(
            bench_row(
                f"backtest.tracemalloc peak @{size:.0e} bars (batch)",
                traced[size],
                "MiB",
                f"@{sizes[0]:.0e} bars",
                traced[sizes[0]],
                TARGETS["backtest.tracemalloc peak"],
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backtest_bench")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    print(f"{'measurement':46} {'value':>10} {'unit':7} {'baseline':22} {'value':>10} ratio target")
    for row in run(quick=args.quick):
        print(
            f"{row['name']:46} {row['value']:>10.4g} {row['unit']:7} {row['baseline_name']:22} "
            f"{row['baseline_value']:>10.4g} {row['ratio']:5.2f} {row['target']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
