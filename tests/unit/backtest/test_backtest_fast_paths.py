"""The engine's shortcuts change nothing but the cost: the batch path's order lifecycle without
events (nobody listening), all-in orders the margin cannot pay rejected in runs, events nobody
subscribes to left unbuilt, bar envelopes built in slices."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from virtufin.backtest import BacktestConfig, BacktestResult, TableBars, run_backtest
from virtufin.backtest.replay import BarBatch, BarEnvelopes, SymbolTable, datetimes
from virtufin.backtest.testkit import synthetic_bars
from virtufin.bus.memory import MemoryBus
from virtufin.envelope import Envelope

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
GOOG = FIXTURES / "GOOG.csv"
REFERENCE = "virtufin.backtest.testkit:SmaCrossReference"
WORKERS = {
    "reference": (REFERENCE, {"fast": 10, "slow": 30}),
    "limits": (f"{FIXTURES}/workers/limit_pinger.py:LimitPinger", {}),
    "mixed": (f"{FIXTURES}/workers/mixed_batches.py:MixedBatches", {"seed": 3}),
}


def _two_symbols() -> pa.Table:
    return pa.concat_tables(
        [synthetic_bars(3_000, symbol="AAA", seed=11), synthetic_bars(3_000, symbol="BBB", seed=12)]
    ).sort_by("ts")


class _CountingBus(MemoryBus):
    """Counts the scenario events published (``sc.*``)."""

    def __init__(self) -> None:
        super().__init__()
        self.scenario_events = 0

    def publish_trusted(self, topic: str, envelope: Envelope) -> None:
        if topic.startswith("sc."):
            self.scenario_events += 1
        super().publish_trusted(topic, envelope)


def _everything(result: BacktestResult) -> dict[str, Any]:
    assert result.equity is not None
    return {
        "trades": [dataclasses.astuple(t) for t in result.trades],
        "orders": [dataclasses.astuple(o) for o in result.orders],
        "stats": result.stats.to_json(),
        "equity": (result.equity.ts.tolist(), result.equity.equity.tolist()),
    }


def _batch_runs(worker: str, source: Any, **config: Any) -> tuple[dict[str, Any], ...]:
    """(unwatched run, watched run, events the unwatched one published, statuses)."""
    strategy, params = WORKERS[worker]
    out = []
    for watched in (False, True):
        bus = _CountingBus()
        if watched:
            bus.subscribe_sync("sc.>", lambda e, d: None)
        cfg = BacktestConfig(mode="batch", run_id="fast", **config)
        result = run_backtest(strategy, source, params=params, config=cfg, bus=bus)
        out.append((_everything(result), bus.scenario_events, result))
    (quiet, quiet_events, result), (loud, loud_events, _) = out
    assert quiet_events == 0 < loud_events
    statuses = Counter(f"{o.status}:{o.status_reason}" for o in result.orders)
    return quiet, loud, statuses


@pytest.mark.parametrize("worker", sorted(WORKERS))
@pytest.mark.parametrize(
    "config",
    [
        {"commission_rate": 0.002},
        {"fill": "close", "commission_rate": 0.001},
        {"slippage_rate": 0.001, "commission_fixed": 0.5, "margin_ratio": 0.5, "batch_rows": 97},
        {"finalize_trades": True, "cash": 1e6, "batch_rows": 61},
    ],
)
def test_an_unwatched_batch_run_is_the_watched_one_without_its_events(
    worker: str, config: dict[str, Any]
) -> None:
    """Nobody listens on the scenario's topics: the venue hands fills straight to the
    portfolio and publishes nothing; trades, orders, equity and statistics are the same."""
    for source in (GOOG, TableBars(_two_symbols())):
        quiet, loud, statuses = _batch_runs(worker, source, **config)
        assert quiet == loud
        assert sum(statuses.values()) > 50


@pytest.mark.parametrize("worker", ["reference", "mixed"])
@pytest.mark.parametrize(
    "config",
    [
        {"cash": 100.5, "commission_rate": 0.001},  # some orders fill, runs of others cannot
        {"cash": 101.0, "slippage_rate": 0.002, "commission_fixed": 0.05, "margin_ratio": 0.5},
        {"cash": 20.0, "batch_rows": 500},  # nothing is affordable
    ],
)
def test_runs_of_unaffordable_all_in_orders_end_as_one_by_one(
    worker: str, config: dict[str, Any]
) -> None:
    """While the account is flat, all-in orders whose next open costs more than the margin
    are rejected together (`SimulatedVenue.unaffordable`), exactly as one at a time."""
    for source in (TableBars(synthetic_bars(8_000)), TableBars(_two_symbols())):
        quiet, loud, statuses = _batch_runs(worker, source, **config)
        assert quiet == loud
        assert statuses["rejected:insufficient margin"] > 100


def test_the_batch_path_numbers_its_orders_per_run() -> None:
    """Order ids of the batch path (``<run>-batch-<n>``) restart with each run."""
    config = BacktestConfig(mode="batch", run_id="again", commission_rate=0.002)
    first, second = (run_backtest(REFERENCE, GOOG, config=config) for _ in range(2))
    assert [o.order_id for o in first.orders] == [o.order_id for o in second.orders]
    assert first.orders[0].order_id == "again-batch-1"


def test_an_event_nobody_receives_still_uses_up_its_id() -> None:
    """A watcher of one kind of event sees the ids it would see watching everything."""
    seen: dict[str, list[str]] = {}
    for pattern in ("sc.>", "sc.*.trading.order.rejected"):
        bus = MemoryBus()
        ids = seen[pattern] = []
        bus.subscribe_sync(
            pattern,
            lambda e, d, ids=ids: ids.append(e.id) if e.type.endswith("rejected") else None,
        )
        run_backtest(
            REFERENCE,
            TableBars(synthetic_bars(3_000)),
            config=BacktestConfig(run_id="ids", cash=150.0, commission_rate=0.002),
            bus=bus,
        )
    assert len(seen["sc.>"]) > 10
    assert seen["sc.>"] == seen["sc.*.trading.order.rejected"]


def test_bar_envelopes_built_in_slices_equal_one_build() -> None:
    table = pa.concat_tables(
        [synthetic_bars(700, symbol="A", seed=1), synthetic_bars(700, symbol="B", seed=2)]
    ).sort_by("ts")
    symbols = SymbolTable(venue="sim", selector="SEL")
    batch = BarBatch.of(table.to_batches(max_chunksize=10_000)[0], symbols, 0, -1)

    def builder() -> BarEnvelopes:
        return BarEnvelopes(table=symbols, scenario_id="BT_X", run_id="r", source="urn:x")

    whole = builder().build(batch)
    sliced, parts = builder(), ([], [])
    for first in range(0, batch.n, 333):
        topics_, envelopes = sliced.build(batch, first, first + 333)
        parts[0].extend(topics_)
        parts[1].extend(envelopes)
    assert whole == parts
    assert whole[1][400].data["candle_open_time"] == whole[1][398].data["candle_close_time"]


def test_datetimes_equal_fromtimestamp() -> None:
    micros = np.array(
        [-1_000_001, 0, 1, 59_999_999, 1_600_000_000_123_456, 1_600_000_060_000_000],
        dtype=np.int64,
    )
    expected = [
        datetime.fromtimestamp(s, UTC).replace(microsecond=u)
        for s, u in zip((micros // 1_000_000).tolist(), (micros % 1_000_000).tolist(), strict=True)
    ]
    assert datetimes(micros) == expected
    assert all(d.tzinfo is UTC for d in datetimes(micros))
    assert datetimes(micros[:0]) == []
