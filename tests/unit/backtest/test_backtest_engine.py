"""The engine: lanes and envelopes of the replay, both replay paths, streaming statistics,
the results folder."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from virtufin.backtest import BacktestConfig, BacktestResult, TableBars, run_backtest
from virtufin.backtest.replay import build_envelopes
from virtufin.backtest.testkit import synthetic_bars
from virtufin.bus.memory import MemoryBus
from virtufin.envelope import Envelope
from virtufin.errors import ConfigError

GOOG = Path(__file__).resolve().parents[2] / "fixtures" / "GOOG.csv"
REFERENCE = "virtufin.backtest.testkit:SmaCrossReference"


def _trades(result: BacktestResult) -> list[tuple[Any, ...]]:
    return [(t.symbol, t.entry_bar, t.exit_bar, t.size, t.entry_price, t.exit_price, t.pnl, t.tag)
            for t in result.trades]  # fmt: skip


def test_bars_travel_on_hyp_lanes_with_a_historical_clock() -> None:
    seen: list[tuple[str, Envelope]] = []
    bus = MemoryBus()
    bus.subscribe_sync("hyp.>", lambda ev, d: seen.append((d.topic, ev)))
    result = run_backtest(
        REFERENCE, GOOG, config=BacktestConfig(run_id="lanes", keep_equity=False), bus=bus
    )
    assert len(seen) == 2148 == result.bars
    topic, first = seen[0]
    assert topic == "hyp.GOOG.exchange.sim.ohlcv.candle.1d.GOOG"
    assert first.type == "com.virtufin.exchange.sim.ohlcv.candle"
    assert first.clocktype == "historical"
    assert (first.marketlane, first.marketselector) == ("hyp", "GOOG")
    assert (first.scenarioid, first.runid) == ("BT_LANES", "lanes")
    assert first.eventtime == first.time
    assert first.eventtime is not None
    assert first.eventtime.isoformat() == "2004-08-20T00:00:00+00:00"
    assert first.data == {
        "symbol": "GOOG",
        "interval": "1d",
        "open": 100.0,
        "high": 104.06,
        "low": 95.96,
        "close": 100.34,
        "volume": 22351900.0,
        "candle_open_time": "2004-08-19T00:00:00Z",
        "candle_close_time": "2004-08-20T00:00:00Z",
    }
    assert first.validate() is first
    assert len({ev.id for _, ev in seen}) == 2148


def test_fast_envelope_builder_equals_the_constructor() -> None:
    template = Envelope(id="t", source="urn:x", type="y", scenarioid="S", marketlane="hyp",
                        marketselector="S", clocktype="historical")  # fmt: skip
    when = pd.Timestamp("2024-01-02", tz="UTC").to_pydatetime()
    built = build_envelopes(template, ["a"], [{"k": 1}], [when])
    assert built == [template.with_changes(id="a", data={"k": 1}, time=when, eventtime=when)]


@pytest.mark.parametrize("batch_rows", [7, 97, 4096])
def test_batch_path_makes_the_same_trades_as_the_event_path(batch_rows: int) -> None:
    two_symbols = pa.concat_tables(
        [synthetic_bars(6_000, symbol="AAA", seed=11), synthetic_bars(6_000, symbol="BBB", seed=12)]
    ).sort_by("ts")
    for source in (GOOG, TableBars(synthetic_bars(20_000)), TableBars(two_symbols)):
        runs = {
            mode: run_backtest(
                REFERENCE,
                source,
                params={"fast": 10, "slow": 30},
                config=BacktestConfig(
                    commission_rate=0.001, mode=mode, batch_rows=batch_rows, run_id="paths"
                ),
            )
            for mode in ("event", "batch")
        }
        assert len(runs["event"].trades) > 50
        assert {t.tag for t in runs["event"].trades} == {"sma_cross"}  # the orders' reason
        assert _trades(runs["batch"]) == _trades(runs["event"])
        assert runs["batch"].stats.to_json() == runs["event"].stats.to_json()


@pytest.mark.parametrize("batch_rows", [61, 4096])
def test_resting_limit_orders_fill_on_the_same_bars_on_both_paths(batch_rows: int) -> None:
    worker = f"{Path(__file__).resolve().parents[2]}/fixtures/workers/limit_pinger.py:LimitPinger"
    two_symbols = pa.concat_tables(
        [synthetic_bars(3_000, symbol="AAA", seed=3), synthetic_bars(3_000, symbol="BBB", seed=4)]
    ).sort_by("ts")
    runs = {
        mode: run_backtest(
            worker,
            TableBars(two_symbols),
            config=BacktestConfig(mode=mode, batch_rows=batch_rows, run_id="limits"),
        )
        for mode in ("event", "batch")
    }
    fills = {
        mode: sorted(
            (o.symbol, o.side, o.submitted_bar, o.filled_bar, o.avg_price)
            for o in run.orders
            if o.status == "filled"
        )
        for mode, run in runs.items()
    }
    assert len(fills["event"]) > 50
    assert fills["batch"] == fills["event"]
    assert _trades(runs["batch"]) == _trades(runs["event"])


def test_batch_mode_needs_on_batch() -> None:
    with pytest.raises(ConfigError, match="has no on_batch"):
        run_backtest("sma_cross", GOOG, config=BacktestConfig(mode="batch"))


def test_statistics_do_not_depend_on_batch_size() -> None:
    runs = [
        run_backtest(REFERENCE, GOOG, config=BacktestConfig(commission_rate=0.002, batch_rows=n))
        for n in (7, 250, 16_384)
    ]
    first = runs[0].stats.to_json()
    for other in runs[1:]:
        for key, value in other.stats.to_json().items():
            if isinstance(value, str):
                assert value == first[key], key
            else:
                assert value == pytest.approx(first[key], rel=1e-12), key


def _peer_stats(result: BacktestResult, closes: np.ndarray) -> pd.Series:
    """backtesting.py's `compute_stats` over our equity curve and trades (its own table)."""
    from backtesting._stats import compute_stats

    assert result.equity is not None
    index = pd.to_datetime(result.equity.label, unit="us")
    ohlc = pd.DataFrame({"Close": closes}, index=index)
    trades = pd.DataFrame(
        {
            "EntryBar": [t.entry_bar for t in result.trades],
            "ExitBar": [t.exit_bar for t in result.trades],
            "PnL": [t.pnl for t in result.trades],
            "ReturnPct": [t.return_pct for t in result.trades],
            "Duration": [
                pd.Timedelta(t.exit_time_us - t.entry_time_us, unit="us") for t in result.trades
            ],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return compute_stats(trades, result.equity.equity, ohlc, None)


def test_streaming_statistics_match_backtesting_py_on_minute_bars() -> None:
    """Intraday bars over several days and batches: resampled daily returns, drawdowns."""
    bars = synthetic_bars(20_000, interval_secs=60, seed=5)
    result = run_backtest(
        REFERENCE,
        TableBars(bars),
        params={"fast": 50, "slow": 200},
        config=BacktestConfig(commission_rate=0.0005, batch_rows=1000, warmup_bars=0),
    )
    assert result.equity is not None
    peer = _peer_stats(result, bars.column("close").to_numpy())
    for label in result.stats:
        if label not in peer.index:  # commissions are not shown for a trades DataFrame
            continue
        ours, theirs = result.stats[label], peer[label]
        if isinstance(theirs, pd.Timedelta):
            assert ours == theirs.to_pytimedelta(), label
        elif isinstance(theirs, pd.Timestamp):
            assert ours == theirs.tz_localize("UTC").to_pydatetime(), label
        else:
            assert ours == pytest.approx(float(theirs), rel=1e-9, abs=1e-9, nan_ok=True), label


def test_cagr_of_a_negative_final_equity_is_nan_as_in_backtesting_py() -> None:
    """Leverage 10 without backtesting.py's stop-out ends below zero: CAGR must be NaN (numpy's
    negative ** fraction), not a complex number that breaks the table and the JSON."""
    result = run_backtest(
        "sma_cross",
        GOOG,
        params={"fast": 10, "slow": 20},
        config=BacktestConfig(commission_rate=0.002, margin_ratio=0.1, warmup_bars=19),
    )
    assert result.equity is not None
    assert result.equity_final < 0
    peer = _peer_stats(result, pd.read_csv(GOOG)["Close"].to_numpy())
    assert np.isnan(peer["CAGR [%]"])
    cagr = result.stats["CAGR [%]"]
    assert isinstance(cagr, float)
    assert np.isnan(cagr)
    assert json.loads(json.dumps(result.to_json()))["metrics"]["cagr_pct"] is None


def test_results_folder(tmp_path: Path) -> None:
    result = run_backtest(
        REFERENCE,
        GOOG,
        config=BacktestConfig(commission_rate=0.002, results_dir=tmp_path / "run", batch_rows=500),
    )
    folder = tmp_path / "run"
    assert sorted(p.name for p in folder.iterdir()) == [
        "equity.parquet", "metrics.json", "orders.parquet", "trades.parquet",
    ]  # fmt: skip
    equity = pq.read_table(folder / "equity.parquet")
    assert equity.schema.names == ["ts", "time", "equity", "drawdown_pct"]
    assert equity.num_rows == 2148
    assert result.equity is not None
    assert np.array_equal(equity.column("equity").to_numpy(), result.equity.equity)
    assert max(equity.column("drawdown_pct").to_pylist()) == pytest.approx(33.93159, abs=1e-5)
    trades = pq.read_table(folder / "trades.parquet")
    assert trades.num_rows == len(result.trades) == 93
    orders = pq.read_table(folder / "orders.parquet")
    assert orders.num_rows == len(result.orders)
    assert {"order_id", "status", "submitted_at", "filled_at"} <= set(orders.schema.names)
    report = json.loads((folder / "metrics.json").read_text())
    assert report == json.loads(json.dumps(result.to_json()))
    assert report["metrics"]["trades"] == 93


def test_streamed_results_equal_kept_results(tmp_path: Path) -> None:
    """keep_trades=False streams trades and orders to Parquet instead of holding them."""
    tables = {}
    for keep in (True, False):
        folder = tmp_path / f"keep_{keep}"
        result = run_backtest(
            REFERENCE,
            GOOG,
            config=BacktestConfig(
                commission_rate=0.002,
                results_dir=folder,
                batch_rows=300,
                keep_trades=keep,
                run_id="stream",
            ),
        )
        assert len(result.trades) == (93 if keep else 0)
        assert result.stats["# Trades"] == 93
        tables[keep] = (
            pq.read_table(folder / "trades.parquet"),
            pq.read_table(folder / "orders.parquet").sort_by("order_id"),
        )
    assert tables[True][0].equals(tables[False][0])
    assert tables[True][1].num_rows == tables[False][1].num_rows == 187
    assert tables[True][1].column("status").equals(tables[False][1].column("status"))


class _AllPublished(MemoryBus):
    """Records the (source, id) of every event published, before de-duplication (checked
    publishes end in `publish_trusted` too)."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[tuple[str, str, str]] = []

    def publish_trusted(self, topic: str, envelope: Envelope) -> None:
        self.keys.append((envelope.source, envelope.id, topic))
        super().publish_trusted(topic, envelope)


@pytest.mark.parametrize("mode", ["event", "batch"])
def test_every_scenario_event_of_a_run_has_its_own_id(mode: str) -> None:
    """The bus drops a second event with a (source, id) it has seen: two emitters of one
    component counting ids apart would lose events (position and PnL events collided)."""
    bus = _AllPublished()
    received: list[str] = []
    bus.subscribe_sync("sc.>", lambda ev, d: received.append(d.topic))
    config = BacktestConfig(commission_rate=0.002, mode=mode, batch_rows=50, run_id="ids")
    run_backtest(REFERENCE, GOOG, params={"fast": 10, "slow": 30}, config=config, bus=bus)
    scenario = [(source, ident) for source, ident, topic in bus.keys if topic.startswith("sc.")]
    assert len(scenario) == len(set(scenario)) == len(received)
    assert sum(".pnl.unrealized." in topic for topic in received) > 10
    assert sum(".position." in topic for topic in received) > 10
