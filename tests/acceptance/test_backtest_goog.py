"""Golden backtests on backtesting.py's bundled GOOG bars (tests/fixtures/GOOG.csv).

backtesting.py itself runs in the test: its documented example (SMA(10, 20) crossover, cash
10 000, commission 0.002, exclusive orders) must come out of Virtufin's engine trade for
trade, through the bundled ``sma_cross`` worker hosted by the worker runtime.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from virtufin.backtest import BacktestConfig, BacktestResult, run_backtest
from virtufin.bus.memory import MemoryBus

GOOG = Path(__file__).resolve().parents[1] / "fixtures" / "GOOG.csv"
ROOT = Path(__file__).resolve().parents[2]


def _peer(commission: float = 0.002, trade_on_close: bool = False) -> pd.Series:
    """backtesting.py's own run of its documented example."""
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover
    from backtesting.test import SMA

    class SmaCross(Strategy):
        n1 = 10
        n2 = 20

        def init(self) -> None:
            self.sma1 = self.I(SMA, self.data.Close, self.n1)
            self.sma2 = self.I(SMA, self.data.Close, self.n2)

        def next(self) -> None:
            if crossover(self.sma1, self.sma2):
                self.buy()
            elif crossover(self.sma2, self.sma1):
                self.sell()

    data = pd.read_csv(GOOG, index_col=0, parse_dates=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backtest = Backtest(
            data,
            SmaCross,
            cash=10_000,
            commission=commission,
            exclusive_orders=True,
            trade_on_close=trade_on_close,
        )
        return backtest.run()


@pytest.fixture(scope="module")
def peer() -> pd.Series:
    return _peer()


@pytest.fixture(scope="module")
def ours() -> BacktestResult:
    return run_backtest(
        "sma_cross",
        GOOG,
        params={"fast": 10, "slow": 20},
        config=BacktestConfig(commission_rate=0.002, warmup_bars=19, run_id="golden1"),
    )


def test_same_trades_as_backtesting_py(ours: BacktestResult, peer: pd.Series) -> None:
    theirs = peer["_trades"]
    assert len(ours.trades) == len(theirs) == 93
    for mine, (_, row) in zip(ours.trades, theirs.iterrows(), strict=True):
        assert (mine.entry_bar, mine.exit_bar) == (row.EntryBar, row.ExitBar)
        assert mine.size == row.Size
        assert mine.entry_price == pytest.approx(row.EntryPrice, rel=1e-12)
        assert mine.exit_price == pytest.approx(row.ExitPrice, rel=1e-12)
        assert mine.pnl == pytest.approx(row.PnL, rel=1e-9, abs=1e-9)
        assert mine.return_pct == pytest.approx(row.ReturnPct, rel=1e-9, abs=1e-12)
        entry = pd.Timestamp(mine.entry_time_us, unit="us")
        assert entry == row.EntryTime


def test_final_equity_within_a_hundredth_of_a_percent(
    ours: BacktestResult, peer: pd.Series
) -> None:
    assert abs(ours.equity_final / peer["Equity Final [$]"] - 1) < 1e-4
    assert ours.equity_final == pytest.approx(56_263.51934, abs=1e-5)


@pytest.mark.parametrize(
    "label",
    [
        "Exposure Time [%]",
        "Equity Final [$]",
        "Equity Peak [$]",
        "Commissions [$]",
        "Return [%]",
        "Buy & Hold Return [%]",
        "Return (Ann.) [%]",
        "Volatility (Ann.) [%]",
        "CAGR [%]",
        "Sharpe Ratio",
        "Sortino Ratio",
        "Calmar Ratio",
        "Alpha [%]",
        "Beta",
        "Max. Drawdown [%]",
        "Avg. Drawdown [%]",
        "# Trades",
        "Win Rate [%]",
        "Best Trade [%]",
        "Worst Trade [%]",
        "Avg. Trade [%]",
        "Profit Factor",
        "Expectancy [%]",
        "SQN",
        "Kelly Criterion",
    ],
)
def test_metrics_match_backtesting_py(ours: BacktestResult, peer: pd.Series, label: str) -> None:
    assert ours.stats[label] == pytest.approx(float(peer[label]), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    "label",
    [
        "Duration",
        "Max. Drawdown Duration",
        "Avg. Drawdown Duration",
        "Max. Trade Duration",
        "Avg. Trade Duration",
    ],
)
def test_durations_match_backtesting_py(ours: BacktestResult, peer: pd.Series, label: str) -> None:
    assert ours.stats[label] == peer[label].to_pytimedelta()


def test_equity_curve_matches_backtesting_py(ours: BacktestResult, peer: pd.Series) -> None:
    assert ours.equity is not None
    theirs = peer["_equity_curve"]["Equity"].to_numpy()
    assert len(ours.equity.equity) == len(theirs) == 2148
    assert max(abs(a - b) for a, b in zip(ours.equity.equity, theirs, strict=True)) < 1e-6
    labels = pd.to_datetime(ours.equity.label, unit="us")
    assert list(labels) == list(peer["_equity_curve"].index)


@pytest.mark.parametrize("strategy", ["sma_cross", "virtufin.backtest.testkit:SmaCrossReference"])
def test_buy_and_hold_starts_after_the_warmup_without_being_told(
    peer: pd.Series, strategy: str
) -> None:
    """The documented CLI run passes no ``--warmup-bars``: the worker's own warm-up (slow - 1
    bars, backtesting.py's indicator warm-up) must start Buy & Hold, hence Alpha."""
    mine = run_backtest(
        strategy,
        GOOG,
        params={"fast": 10, "slow": 20},
        config=BacktestConfig(commission_rate=0.002, keep_equity=False),
    )
    for label in ("Buy & Hold Return [%]", "Alpha [%]"):
        assert mine.stats[label] == pytest.approx(float(peer[label]), rel=1e-9), label


def test_golden_figures(ours: BacktestResult) -> None:
    """Exact figures of this run, as nautilus' acceptance tests pin theirs."""
    assert ours.bars == 2148
    assert [o.status for o in ours.orders].count("filled") == 94 + 93  # one trade stays open
    first, last = ours.trades[0], ours.trades[-1]
    assert (first.size, first.entry_price, first.exit_price) == (-59.0, 169.02, 179.13)
    assert first.pnl == pytest.approx(-637.5717, abs=1e-9)
    assert (last.entry_bar, last.exit_bar) == (2059, 2087)
    assert ours.stats["Return [%]"] == pytest.approx(462.635193400001, abs=1e-9)
    assert ours.stats["Max. Drawdown Duration"] == timedelta(days=830)


def test_rerun_is_identical(ours: BacktestResult) -> None:
    bus = MemoryBus()
    again = run_backtest(
        "sma_cross",
        GOOG,
        params={"fast": 10, "slow": 20},
        config=BacktestConfig(commission_rate=0.002, warmup_bars=19, run_id="golden1"),
        bus=bus,
    )
    assert again.trades == ours.trades
    assert again.stats.to_json() == ours.stats.to_json()
    assert again.orders == ours.orders


def test_rerun_publishes_the_same_events() -> None:
    def record() -> list[tuple[str, str, str, object]]:
        seen: list[tuple[str, str, str, object]] = []
        bus = MemoryBus()
        bus.subscribe_sync("sc.>", lambda ev, d: seen.append((d.topic, ev.id, ev.type, ev.data)))
        run_backtest(
            "sma_cross",
            GOOG,
            params={"fast": 10, "slow": 20},
            config=BacktestConfig(
                commission_rate=0.002, run_id="same", scenario_id="BT_SAME", keep_equity=False
            ),
            bus=bus,
        )
        return seen

    first, second = record(), record()
    assert first == second
    kinds = {topic.split(".", 2)[2] for topic, *_ in first}
    assert {
        "trading.order.submitted",
        "trading.order.accepted",
        "trading.order.filled",
        "position.GOOG.opened",
        "position.GOOG.closed",
        "trading.trade.closed",
        "pnl.realized.update",
    } <= kinds


def test_script_worker_makes_the_same_trades(ours: BacktestResult) -> None:
    """Any worker, through the runtime: the text/x-python twin runs in a child process."""
    script = run_backtest(
        str(ROOT / "workers" / "sma_cross" / "script.py"),
        GOOG,
        params={"fast": 10, "slow": 20},
        config=BacktestConfig(commission_rate=0.002, warmup_bars=19, keep_equity=False),
    )
    assert [(t.entry_bar, t.exit_bar, t.size) for t in script.trades] == [
        (t.entry_bar, t.exit_bar, t.size) for t in ours.trades
    ]
    assert script.equity_final == ours.equity_final


def test_native_worker_makes_the_same_trades_on_both_paths(ours: BacktestResult) -> None:
    """The C twin, in process: bar events through ``Process``, and whole Arrow batches through
    ``OnBatch`` (zero-copy), small and large."""
    subprocess.run(["make", "-s", "-C", str(ROOT / "native")], check=True, timeout=120)
    manifest = str(ROOT / "native" / "build" / "libsma_cross.manifest.json")
    expected = [(t.entry_bar, t.exit_bar, t.size, t.pnl) for t in ours.trades]
    for mode, rows in (("event", 16_384), ("batch", 16_384), ("batch", 10)):
        native = run_backtest(
            manifest,
            GOOG,
            params={"fast": 10, "slow": 20},
            config=BacktestConfig(
                commission_rate=0.002, warmup_bars=19, mode=mode, batch_rows=rows,
                keep_equity=False,
            ),
        )  # fmt: skip
        assert [(t.entry_bar, t.exit_bar, t.size, t.pnl) for t in native.trades] == expected
        assert native.equity_final == pytest.approx(
            ours.equity_final, rel=1e-12
        )  # summed per batch


def test_fill_at_close_matches_trade_on_close() -> None:
    peer = _peer(trade_on_close=True)
    mine = run_backtest(
        "sma_cross",
        GOOG,
        params={"fast": 10, "slow": 20},
        config=BacktestConfig(commission_rate=0.002, fill="close", keep_equity=False),
    )
    theirs = peer["_trades"]
    assert [(t.entry_bar, t.exit_bar, t.size) for t in mine.trades] == list(
        zip(theirs.EntryBar, theirs.ExitBar, theirs.Size, strict=True)
    )
    assert abs(mine.equity_final / peer["Equity Final [$]"] - 1) < 1e-4


def test_cli_reproduces_the_example(peer: pd.Series) -> None:
    out = subprocess.run(
        [
            sys.executable, "-m", "virtufin.cli.backtest",
            "--strategy", "sma_cross", "--param", "fast=10", "--param", "slow=20",
            "--data", str(GOOG), "--commission", "0.002", "--json",
        ],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    report = json.loads(out.stdout)
    metrics = report["metrics"]
    assert metrics["trades"] == 93 == len(report["trades"])
    assert math.isclose(metrics["equity_final"], peer["Equity Final [$]"], rel_tol=1e-9)
    assert report["trades"][0]["entry_time"] == "2004-11-17T00:00:00Z"
    assert set(report["trades"][0]) >= {"entry_time", "exit_time", "entry_price", "size", "pnl"}


def test_cli_prints_the_table() -> None:
    out = subprocess.run(
        [
            sys.executable, "-m", "virtufin.cli.backtest",
            "--strategy", "sma_cross", "--param", "fast=10", "--param", "slow=20",
            "--data", str(GOOG), "--commission", "0.002",
        ],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert "Equity Final [$]                 56263.51934" in out.stdout
    assert "# Trades                                  93" in out.stdout
