"""The results of a run: the in-memory `BacktestResult` and its files on disk.

Layout of ``results_dir`` (docs/spec/backtest.md):

- ``equity.parquet``  ``ts`` (bar close, timestamp[us, UTC]), ``time`` (bar label = start),
  ``equity``, ``drawdown_pct`` — streamed batch by batch while the run goes;
- ``trades.parquet``  one row per closed trade (backtesting.py's ``_trades``);
- ``orders.parquet``  one row per order with its final status;
- ``metrics.json``    ``{"run": {...}, "metrics": {...}, "trades": [...]}`` (the ``--json``
  output of the CLI).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from virtufin.backtest.config import BacktestConfig
from virtufin.backtest.equity import EquityRows
from virtufin.backtest.metrics import Stats
from virtufin.backtest.portfolio import Trade
from virtufin.backtest.venue import Order

__all__ = ["BacktestResult", "EquityCurve", "ResultsWriter"]

_TS: Final = pa.timestamp("us", tz="UTC")
EQUITY_SCHEMA: Final = pa.schema(
    [("ts", _TS), ("time", _TS), ("equity", pa.float64()), ("drawdown_pct", pa.float64())]
)
TRADES_SCHEMA: Final = pa.schema(
    [
        ("trade_id", pa.string()),
        ("symbol", pa.string()),
        ("size", pa.float64()),
        ("entry_bar", pa.int64()),
        ("exit_bar", pa.int64()),
        ("entry_price", pa.float64()),
        ("exit_price", pa.float64()),
        ("entry_time", _TS),
        ("exit_time", _TS),
        ("pnl", pa.float64()),
        ("commission", pa.float64()),
        ("return_pct", pa.float64()),
        ("entry_order_id", pa.string()),
        ("exit_order_id", pa.string()),
        ("tag", pa.string()),
    ]
)
_ORDER_TIMES: Final = ("submitted_at_us", "filled_at_us")


@dataclass(frozen=True, slots=True)
class EquityCurve:
    """The whole equity curve in memory (when `BacktestConfig.keep_equity`)."""

    ts: np.ndarray[Any, np.dtype[np.int64]]
    label: np.ndarray[Any, np.dtype[np.int64]]
    equity: np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Everything a run produced. `stats` is backtesting.py's table (`Stats`)."""

    run_id: str
    scenario_id: str
    selector: str
    worker_id: str
    config: BacktestConfig
    stats: Stats
    trades: tuple[Trade, ...]
    orders: tuple[Order, ...]
    bars: int
    equity_rows: int
    elapsed_secs: float
    replay_secs: float = 0.0
    worker_errors: int = 0
    results_dir: Path | None = None
    equity: EquityCurve | None = None
    symbols: tuple[str, ...] = field(default_factory=tuple)

    @property
    def equity_final(self) -> float:
        value: float = self.stats["Equity Final [$]"]
        return value

    @property
    def bars_per_sec(self) -> float:
        """Replay throughput (loading the worker and writing results excluded)."""
        return self.bars / self.replay_secs if self.replay_secs else math.inf

    def run_info(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "scenario_id": self.scenario_id,
            "selector": self.selector,
            "worker_id": self.worker_id,
            "symbols": list(self.symbols),
            "bars": self.bars,
            "equity_rows": self.equity_rows,
            "elapsed_secs": self.elapsed_secs,
            "replay_secs": self.replay_secs,
            "worker_errors": self.worker_errors,
            "config": self.config.model_dump(mode="json"),
        }

    def to_json(self) -> dict[str, Any]:
        """One JSON object: run info, every metric, the list of trades."""
        return {
            "run": self.run_info(),
            "metrics": self.stats.to_json(),
            "trades": [t.to_json() for t in self.trades],
        }


class ResultsWriter:
    """Streams the equity curve to Parquet; writes trades, orders and metrics at the end."""

    def __init__(self, directory: Path | None, *, keep_in_memory: bool) -> None:
        self.directory = directory
        self._writer: pq.ParquetWriter | None = None
        self._peak = -math.inf
        self._keep = keep_in_memory
        self._parts: list[EquityRows] = []
        self._trades: pq.ParquetWriter | None = None
        self._orders: pq.ParquetWriter | None = None
        self.rows = 0
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(
                directory / "equity.parquet", EQUITY_SCHEMA, compression="zstd"
            )

    def add(self, rows: EquityRows) -> None:
        if not len(rows):
            return
        self.rows += len(rows)
        if self._keep:
            self._parts.append(rows)
        if self._writer is None:
            return
        peak = np.maximum.accumulate(np.concatenate(([self._peak], rows.equity)))[1:]
        self._peak = float(peak[-1])
        with np.errstate(divide="ignore", invalid="ignore"):
            drawdown = (1 - rows.equity / peak) * 100
        table = pa.Table.from_arrays(
            [
                pa.array(rows.ts, _TS),
                pa.array(rows.label, _TS),
                pa.array(rows.equity),
                pa.array(drawdown),
            ],
            schema=EQUITY_SCHEMA,
        )
        self._writer.write_table(table)

    def curve(self) -> EquityCurve | None:
        if not self._keep:
            return None
        parts = self._parts
        if not parts:
            empty = np.empty(0, dtype=np.int64)
            return EquityCurve(empty, empty, np.empty(0))
        return EquityCurve(
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.label for p in parts]),
            np.concatenate([p.equity for p in parts]),
        )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def add_trades(self, trades: list[Trade]) -> None:
        """Stream closed trades (when the result does not keep them)."""
        if self.directory is None or not trades:
            return
        if self._trades is None:
            self._trades = pq.ParquetWriter(
                self.directory / "trades.parquet", TRADES_SCHEMA, compression="zstd"
            )
        self._trades.write_table(_trades_table(trades))

    def add_orders(self, orders: list[Order]) -> None:
        """Stream finished orders (when the result does not keep them)."""
        if self.directory is None or not orders:
            return
        table = _orders_table(orders)
        if self._orders is None:
            self._orders = pq.ParquetWriter(
                self.directory / "orders.parquet", table.schema, compression="zstd"
            )
        self._orders.write_table(table.cast(self._orders.schema))

    def finish(self, result: BacktestResult) -> None:
        """Write trades, orders (unless streamed) and metrics; close every file."""
        self.close()
        directory = self.directory
        if directory is None:
            return
        if self._trades is not None:
            self._trades.close()
        else:
            pq.write_table(
                _trades_table(list(result.trades)), directory / "trades.parquet", compression="zstd"
            )
        if self._orders is not None:
            self._orders.close()
        else:
            pq.write_table(
                _orders_table(list(result.orders)), directory / "orders.parquet", compression="zstd"
            )
        (directory / "metrics.json").write_text(
            json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )


def _trades_table(trades: list[Trade]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in TRADES_SCHEMA.names}
    for trade in trades:
        row = asdict(trade)
        row["entry_time"] = row.pop("entry_time_us")
        row["exit_time"] = row.pop("exit_time_us")
        for name, values in columns.items():
            values.append(row[name])
    return pa.Table.from_pydict(columns, schema=TRADES_SCHEMA)


def _orders_table(orders: list[Order]) -> pa.Table:
    if not orders:
        return pa.table({"order_id": pa.array([], pa.string())})
    table = pa.Table.from_pylist([asdict(o) for o in orders])
    for name in _ORDER_TIMES:
        index = table.schema.get_field_index(name)
        column = table.column(index).cast(pa.int64()).cast(_TS)
        table = table.set_column(index, name.removesuffix("_us"), column)
    for name in ("qty", "limit_price", "avg_price"):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, table.column(index).cast(pa.float64()))
    for name in ("filled_bar", "parent_id", "correlationid"):
        index = table.schema.get_field_index(name)
        kind = pa.int64() if name == "filled_bar" else pa.string()
        table = table.set_column(index, name, table.column(index).cast(kind))
    return table
