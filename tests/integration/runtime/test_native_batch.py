"""The native batch extension: ``OnBatch`` gets Arrow record batches zero-copy through the Arrow
C data interface and answers with order columns; the bundled C ``sma_cross`` decides exactly as
its event path and as the Python reference, whatever the batch sizes and symbols."""

from __future__ import annotations

import gc
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from virtufin.backtest import BacktestConfig, BacktestResult, TableBars, run_backtest
from virtufin.backtest.data import open_source
from virtufin.backtest.testkit import SmaCrossConfig, SmaCrossReference, synthetic_bars
from virtufin.cli.backtest import main as backtest_main
from virtufin.envelope import Envelope
from virtufin.errors import ConfigError, WorkerError
from virtufin.runtime.factory import create_engine
from virtufin.runtime.manifest import WorkerManifest
from virtufin.runtime.native import NativeEngine, OrderColumns
from virtufin.runtime.native_lib import ffi
from workers.kit import WorkerContext
from workers.kit.context import Emission

ROOT = Path(__file__).resolve().parents[3]
GOOG = ROOT / "tests" / "fixtures" / "GOOG.csv"
REFERENCE = "virtufin.backtest.testkit:SmaCrossReference"
PARAMS = {"fast": 10, "slow": 30}
ADDRESS = re.compile(r"(\w+)=(0x[0-9a-f]+|\(nil\)|-?\d+|\w+)")


@pytest.fixture(scope="module")
def sma_manifest(native_build: Path) -> WorkerManifest:
    return WorkerManifest.load(native_build / "libsma_cross.manifest.json")


def goog_table() -> pa.Table:
    return pa.Table.from_batches(list(open_source(GOOG).batches(100_000)))


def two_symbols() -> pa.Table:
    return pa.concat_tables(
        [synthetic_bars(6_000, symbol="AAA", seed=11), synthetic_bars(6_000, symbol="BBB", seed=12)]
    ).sort_by("ts")


def three_symbols() -> pa.Table:
    """Symbols of different lengths, interleaved unevenly (one trades every other minute)."""
    parts = [
        synthetic_bars(4_000, symbol="A", seed=21),
        synthetic_bars(4_000, symbol="BBBB", seed=22),
        synthetic_bars(2_000, symbol="CC", seed=23, interval_secs=120),
    ]
    return pa.concat_tables(parts).sort_by([("ts", "ascending"), ("symbol", "ascending")])


TABLES = {
    "goog": goog_table,
    "one symbol": lambda: synthetic_bars(20_000),
    "two symbols": two_symbols,
    "three symbols": three_symbols,
}


# --------------------------------------------------------------------------- decisions


def _bar(symbol: str, close: float) -> Envelope:
    return Envelope.new(
        type="com.virtufin.exchange.sim.ohlcv.candle",
        source="urn:com.virtufin.test",
        scenarioid="BT_NATIVE",
        data={"symbol": symbol, "close": close},
    )


def event_decisions(manifest: WorkerManifest, table: pa.Table) -> list[tuple[int, str, str]]:
    """(row, symbol, side) of the library's ``Process``, one bar event per row."""
    symbols = table.column("symbol").to_pylist()
    closes = table.column("close").to_pylist()
    out = []
    with create_engine(manifest, params=PARAMS) as engine:
        for row, (symbol, close) in enumerate(zip(symbols, closes, strict=True)):
            out += [
                (row, o.data["symbol"], o.data["side"]) for o in engine.process(_bar(symbol, close))
            ]
    return out


def batch_decisions(
    manifest: WorkerManifest, batches: list[pa.RecordBatch]
) -> list[tuple[int, str, str]]:
    """(row, symbol, side) of the library's ``OnBatch`` over `batches` (rows counted across)."""
    out, start = [], 0
    with create_engine(manifest, params=PARAMS) as engine:
        assert isinstance(engine, NativeEngine)
        for batch in batches:
            symbols = batch.column("symbol").to_pylist()
            for item in engine.on_batch(batch):
                assert isinstance(item, OrderColumns)
                for row, side in zip(item.rows.tolist(), item.sides.tolist(), strict=True):
                    out.append((start + row, symbols[row], "buy" if side > 0 else "sell"))
            start += batch.num_rows
        assert engine.lib.unreleased == 0  # the library released every batch itself
    return sorted(out)


def reference_decisions(batches: list[pa.RecordBatch]) -> list[tuple[int, str, str]]:
    """(row, symbol, side) of the Python reference worker's ``on_batch``."""
    worker = SmaCrossReference()
    ctx = WorkerContext(worker_id="ref", config=SmaCrossConfig(**PARAMS))
    worker.ctx = ctx
    worker.on_start(ctx)
    out, start = [], 0
    for batch in batches:
        for orders in worker.on_batch(batch):
            for row, data in orders.orders():
                out.append((start + row, data["symbol"], data["side"]))
        start += batch.num_rows
    return sorted(out)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_on_batch_decides_as_process_and_the_reference(sma_manifest, name):
    table = TABLES[name]()
    expected = event_decisions(sma_manifest, table)
    assert len(expected) > 30
    assert {side for _, _, side in expected} == {"buy", "sell"}
    assert expected == reference_decisions(table.to_batches(max_chunksize=4096))
    whole = table.combine_chunks().to_batches()[0]
    sizes = [1, 2, 29, 30, 31, 97, 4096] if len(table) <= 3_000 else [7, 29, 30, 31, 97, 4096]
    for size in sizes:
        assert batch_decisions(sma_manifest, table.to_batches(max_chunksize=size)) == expected, size
    # slices of one batch: the columns come with an offset into shared buffers
    slices = [whole.slice(start, 333) for start in range(0, len(table), 333)]
    assert slices[1].column("close").offset == 333
    assert batch_decisions(sma_manifest, slices) == expected
    assert batch_decisions(sma_manifest, [whole]) == expected


def test_both_paths_share_one_history_and_give_the_same_orders(sma_manifest):
    """Batches then events on one instance decide as events alone, with the same order data."""
    table = synthetic_bars(5_000)
    expected = event_decisions(sma_manifest, table)
    symbols = table.column("symbol").to_pylist()
    closes = table.column("close").to_pylist()
    got, reasons = [], set()
    with create_engine(sma_manifest, params=PARAMS) as engine:
        start = 0
        for batch in table.slice(0, 3_000).to_batches(max_chunksize=1_000):
            for item in engine.on_batch(batch):
                side = "buy" if item.sides[0] > 0 else "sell"
                reasons.add((side, item.options["reason"]))
                got += [(start + r, "SYN", side) for r in item.rows.tolist()]
            start += batch.num_rows
        for row in range(3_000, 5_000):
            for out in engine.process(_bar(symbols[row], closes[row])):
                got.append((row, out.data["symbol"], out.data["side"]))
                reasons.add((out.data["side"], out.data["reason"]))
                assert out.data["sizing"] == "all_in"
                assert out.data["exclusive"] is True
                assert out.data["qty"] is None
    assert sorted(got) == expected
    assert reasons == {
        ("buy", "fast SMA(10) crossed above slow SMA(30)"),
        ("sell", "fast SMA(10) crossed below slow SMA(30)"),
    }


# --------------------------------------------------------------------------- zero copy, release


def _log_fields(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    return [
        dict(ADDRESS.findall(r.getMessage())) for r in caplog.records if "rows=" in r.getMessage()
    ]


def test_the_library_reads_pyarrows_buffers_in_place(native_manifest, caplog):
    caplog.set_level(logging.INFO, logger="virtufin.runtime.native_lib")
    table = synthetic_bars(1_000)
    batch = table.to_batches()[0]
    sliced = batch.slice(100, 50)
    with create_engine(native_manifest("batch_probe")) as engine:
        engine.on_batch(batch)
        engine.on_batch(sliced)
    seen = _log_fields(caplog)
    for got, record, offset in ((seen[0], batch, 0), (seen[1], sliced, 100)):
        close, symbol = record.column("close"), record.column("symbol")
        assert int(got["rows"]) == record.num_rows
        assert int(got["close"], 16) == close.buffers()[1].address
        assert int(got["close_offset"]) == offset
        assert int(got["symbol_offsets"], 16) == symbol.buffers()[1].address
        assert int(got["symbol_data"], 16) == symbol.buffers()[2].address
        assert int(got["symbol_offset"]) == offset
        assert got["format"] == "g"


def test_the_batch_structs_have_the_documented_layout(native_manifest, caplog):
    caplog.set_level(logging.INFO, logger="virtufin.runtime.native_lib")
    with create_engine(native_manifest("batch_probe"), params={"mode": "layout"}) as engine:
        assert engine.on_batch(synthetic_bars(3).to_batches()[0]) == []
    (line,) = [r.getMessage() for r in caplog.records if "sizes" in r.getMessage()]
    numbers = [int(n) for n in re.findall(r"\d+", line)]
    assert numbers == [72, 80, 40, 32, 8, 16, 24, 32, 8, 16, 24, 1]
    types = ("struct ArrowSchema", "struct ArrowArray", "VirtufinOrderColumns", "VirtufinBatchSink")
    columns = ("rows", "sides", "limit_prices", "options")
    sink = ("version", "orders", "emit")
    assert [ffi.sizeof(t) for t in types] == numbers[:4]
    assert [ffi.offsetof("VirtufinOrderColumns", f) for f in columns] == numbers[4:8]
    assert [ffi.offsetof("VirtufinBatchSink", f) for f in sink] == numbers[8:11]


def _pool_batch(n: int) -> pa.RecordBatch:
    """A batch whose buffers come from pyarrow's memory pool (so their lifetime is measurable)."""
    return pa.record_batch(
        {
            "close": pa.array([100.0 + (i % 37) * 0.25 for i in range(n)]),
            "symbol": pa.array(["AAA"] * n),
        }
    )


@pytest.mark.parametrize("worker", ["sma_cross", "batch_probe", "move", "keep"])
def test_every_batch_is_released_so_nothing_leaks(sma_manifest, native_manifest, caplog, worker):
    if worker == "sma_cross":
        engine = create_engine(sma_manifest, params=PARAMS)
    else:
        mode = {"batch_probe": "report"}.get(worker, worker)
        engine = create_engine(native_manifest("batch_probe"), params={"mode": mode})
    gc.collect()
    before = pa.total_allocated_bytes()
    with engine:
        batch = _pool_batch(50_000)
        held = pa.total_allocated_bytes() - before
        assert held >= 50_000 * 8
        for _ in range(20):
            engine.on_batch(batch)
        del batch
        gc.collect()
        if worker == "move":  # the library still holds the last batch it moved out
            assert pa.total_allocated_bytes() - before >= held
        else:
            assert pa.total_allocated_bytes() == before
        unreleased = engine.lib.unreleased
    gc.collect()
    assert pa.total_allocated_bytes() == before  # Destroy released the moved batch
    assert unreleased == (20 if worker == "keep" else 0)
    warned = [r for r in caplog.records if "unreleased after OnBatch" in r.getMessage()]
    assert len(warned) == (1 if worker == "keep" else 0)


# --------------------------------------------------------------------------- outputs, failures


def test_order_columns_and_json_emissions_come_back(native_manifest):
    batch = synthetic_bars(10).to_batches()[0]
    closes = batch.column("close").to_pylist()
    with create_engine(native_manifest("batch_probe")) as engine:
        (columns,) = engine.on_batch(batch)
    assert isinstance(columns, OrderColumns)
    assert columns.rows.tolist() == [0, 9]
    assert columns.sides.tolist() == [1, -1]
    assert columns.limit_prices.tolist() == [closes[0], closes[9]]
    assert dict(columns.options) == {"qty": 2, "sizing": "units", "exclusive": False,
                                     "reason": "probe"}  # fmt: skip
    with create_engine(native_manifest("batch_probe"), params={"mode": "json"}) as engine:
        order, note = engine.on_batch(batch)
    assert isinstance(order, Emission)
    assert order.data["row"] == 0
    assert order.data["limit_price"] == closes[0]
    assert note == Emission("com.example.note", {"rows": 10})


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("fail", "OnBatch returned 7: probe refuses the batch"),
        ("options", "OnBatch returned 1: unknown order option 'colour'"),
        ("ignore", "OnBatch ignored a refusal: unknown order option 'colour'"),
        ("rows", r"rows outside the batch \(0..9\)"),
    ],
)
def test_failed_batches_are_worker_errors(native_manifest, mode, message):
    with create_engine(native_manifest("batch_probe"), params={"mode": mode}) as engine:
        with pytest.raises(WorkerError, match=message):
            engine.on_batch(synthetic_bars(10).to_batches()[0])
        assert engine.lib.unreleased == 0


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (pa.record_batch({"close": [1.0]}), "the batch has no symbol column"),
        (pa.record_batch({"close": pa.array([1.0], pa.float32()), "symbol": ["A"]}),
         r'close must be float64 \("g"\) without nulls, not "f"'),
        (pa.record_batch({"close": [1.0, None], "symbol": ["A", "A"]}), "close must be float64"),
        (pa.record_batch({"close": [1.0], "symbol": pa.array(["A"]).dictionary_encode()}),
         'symbol must be utf8 .* not "i"'),
    ],
)  # fmt: skip
def test_sma_cross_refuses_batches_it_cannot_read(sma_manifest, batch, message):
    with create_engine(sma_manifest, params=PARAMS) as engine:
        with pytest.raises(WorkerError, match=f"OnBatch returned 1: {message}"):
            engine.on_batch(batch)
        assert engine.lib.unreleased == 0
        large = pa.record_batch({"close": [1.0], "symbol": pa.array(["A"], pa.large_string())})
        assert engine.on_batch(large) == []


def test_a_library_without_on_batch_still_loads_and_runs_events(native_manifest, make_event):
    """ABI 1 libraries built before the extension keep working (event path only)."""
    with create_engine(native_manifest("probe")) as engine:
        assert not engine.has_on_batch
        assert engine.process(make_event({"op": "none"})) == []
        with pytest.raises(WorkerError, match="does not export OnBatch"):
            engine.on_batch(synthetic_bars(3).to_batches()[0])


# --------------------------------------------------------------------------- backtests


def _trades(result: BacktestResult) -> list[tuple[Any, ...]]:
    return [(t.symbol, t.entry_bar, t.exit_bar, t.size, t.entry_price, t.exit_price, t.pnl)
            for t in result.trades]  # fmt: skip


@pytest.mark.parametrize("name", ["goog", "one symbol", "two symbols"])
def test_native_batch_backtest_trades_as_the_event_path_and_the_reference(sma_manifest, name):
    table = TABLES[name]()
    source = TableBars(table)

    def run(strategy: Any, mode: str, rows: int) -> BacktestResult:
        config = BacktestConfig(commission_rate=0.001, mode=mode, batch_rows=rows, run_id="nb")
        return run_backtest(strategy, source, params=PARAMS, config=config)

    event = run(sma_manifest, "event", 4096)
    assert len(event.trades) > 50
    assert _trades(run(REFERENCE, "event", 4096)) == _trades(event)
    sizes = [1, 7, 97, 4096] if name == "goog" else [7, 97, 4096]
    for rows in sizes:
        batch = run(sma_manifest, "batch", rows)
        assert _trades(batch) == _trades(event), rows
        assert [
            (o.symbol, o.side, o.submitted_bar, o.filled_bar, o.reason) for o in batch.orders
        ] == [(o.symbol, o.side, o.submitted_bar, o.filled_bar, o.reason) for o in event.orders]


def test_batch_mode_refuses_engines_that_cannot_take_batches(sma_manifest, native_manifest):
    safe = sma_manifest.model_copy(update={"isolation": "process"})
    with pytest.raises(ConfigError, match=r"runs out of process \(a native library in safe mode\)"):
        run_backtest(safe, GOOG, config=BacktestConfig(mode="batch"))
    script = str(ROOT / "workers" / "sma_cross" / "script.py")
    with pytest.raises(ConfigError, match=r"runs out of process \(a script\)"):
        run_backtest(script, GOOG, config=BacktestConfig(mode="batch"))
    with pytest.raises(ConfigError, match=r"libprobe\.so does not export OnBatch"):
        run_backtest(native_manifest("probe"), GOOG, config=BacktestConfig(mode="batch"))


def test_a_failing_on_batch_stops_the_backtest(native_manifest):
    with pytest.raises(WorkerError, match="probe refuses the batch"):
        run_backtest(
            native_manifest("batch_probe"),
            TableBars(synthetic_bars(50)),
            params={"mode": "fail"},
            config=BacktestConfig(mode="batch"),
        )


def test_cli_runs_a_native_manifest_in_batch_mode(native_build, capsys):
    def cli(mode: str) -> dict[str, Any]:
        status = backtest_main(
            [
                "--strategy", str(native_build / "libsma_cross.manifest.json"),
                "--param", "fast=10", "--param", "slow=20", "--data", str(GOOG),
                "--commission", "0.002", "--mode", mode, "--json",
            ]
        )  # fmt: skip
        assert status == 0
        out: dict[str, Any] = json.loads(capsys.readouterr().out)
        return out

    batch, event = cli("batch"), cli("event")
    assert len(batch["trades"]) == len(event["trades"]) == 93
    strip = ("entry_time", "exit_time", "entry_bar", "exit_bar", "size", "pnl")
    assert [{k: t[k] for k in strip} for t in batch["trades"]] == [
        {k: t[k] for k in strip} for t in event["trades"]
    ]
    assert batch["run"]["config"]["mode"] == "batch"
    assert np.isclose(batch["metrics"]["equity_final"], 56263.51934)
