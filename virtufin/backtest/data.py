"""Bar sources: the hive-partitioned market-data dataset, and plain CSV or Parquet files.

Every source yields Arrow record batches in `BAR_SCHEMA`, sorted by `ts` (the bar's close time),
and never holds more than one batch per symbol, so a dataset larger than memory replays in
bounded memory. Several symbols are k-way merged by time (`merge_by_time`).

Dataset layout (docs/spec/backtest.md): ``<root>/selector=<SEL>/symbol=<SYM>/date=<YYYY-MM-DD>/
*.parquet`` with columns ``ts`` (timestamp[us, UTC]), ``open, high, low, close, volume``
(float64), ``symbol``, ``interval``. backtesting.py's ``Date,Open,High,Low,Close,Volume`` files
are accepted as they are: ``Date`` labels the bar's start, so ``ts = Date + interval``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from virtufin.errors import ConfigError
from virtufin.lanes import is_valid_id
from virtufin.marketdata.schema import BAR_SCHEMA  # one schema for writer and reader

__all__ = [
    "BAR_SCHEMA",
    "DATA_ROOT_ENV",
    "BarSource",
    "FileBars",
    "HiveDataset",
    "TableBars",
    "format_interval",
    "merge_by_time",
    "open_source",
    "parse_interval",
]

DATA_ROOT_ENV: Final = "VIRTUFIN_DATA_ROOT"
_US: Final = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_US["w"] = 7 * _US["d"]
_US["M"] = 31 * _US["d"]
_INTERVAL_RE: Final = re.compile(r"^(\d+)([smhdwM])$")
_PEER_TIME_COLUMNS: Final = ("date", "datetime", "time", "timestamp")
_OHLCV: Final = ("open", "high", "low", "close", "volume")


def parse_interval(text: str) -> int:
    """Microseconds of an interval token (``1m``, ``5m``, ``1h``, ``1d``, ``1w``, ``1M``)."""
    match = _INTERVAL_RE.match(text)
    if match is None:
        raise ConfigError("data", "interval", f"{text!r} is not <n><s|m|h|d|w|M>")
    return int(match.group(1)) * _US[match.group(2)]


def format_interval(micros: int) -> str:
    """The shortest interval token for `micros` (the inverse of `parse_interval`)."""
    for unit in ("M", "w", "d", "h", "m", "s"):
        size = _US[unit]
        if micros >= size and micros % size == 0 and (unit != "M" or micros == size):
            return f"{micros // size}{unit}"
    raise ConfigError("data", "interval", f"{micros} µs is not a whole number of seconds")


class BarSource:
    """Base class of bar sources.

    | member   | required | notes                                                  |
    |----------|----------|--------------------------------------------------------|
    | batches  | yes      | record batches in `BAR_SCHEMA`, `ts` non-decreasing    |
    | selector | yes      | the data universe (`hyp.<selector>` lanes)             |
    | describe | no       | one line for reports                                   |
    """

    selector: str = "DATA"

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        raise NotImplementedError("BarSource.batches")

    def describe(self) -> str:
        return type(self).__name__


# --------------------------------------------------------------------------- normalising


def _utc_micros(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Any date/time/string column as timestamp[us, UTC] (naive values are taken as UTC)."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        column = pc.cast(column, pa.timestamp("us"))
        kind = column.type
    if pa.types.is_date(kind):
        column = pc.cast(pc.cast(column, pa.date32()), pa.timestamp("us"))
        kind = column.type
    if not pa.types.is_timestamp(kind):
        raise ConfigError("data", "ts", f"time column has type {kind}, not a timestamp")
    if kind.tz is None:
        column = pc.assume_timezone(pc.cast(column, pa.timestamp("us")), "UTC")
    return pc.cast(column, pa.timestamp("us", tz="UTC"))


@dataclass(frozen=True, slots=True)
class _Layout:
    """How one file's columns map onto `BAR_SCHEMA`."""

    time_column: str
    columns: dict[str, str]  # ours -> theirs
    label_is_start: bool  # backtesting.py's Date labels the bar's start

    @classmethod
    def detect(cls, names: Sequence[str], where: str) -> _Layout:
        lower = {n.lower(): n for n in names}
        if "ts" in lower:
            time_column, start = lower["ts"], False
        else:
            found = next((lower[c] for c in _PEER_TIME_COLUMNS if c in lower), None)
            if found is None:
                raise ConfigError(where, "ts", "no ts, Date or Datetime column")
            time_column, start = found, True
        columns: dict[str, str] = {
            c: lower[c] for c in (*_OHLCV, "symbol", "interval") if c in lower
        }
        missing = [c for c in _OHLCV[:4] if c not in columns]
        if missing:
            raise ConfigError(where, ",".join(missing), "missing OHLC column(s)")
        return cls(time_column, columns, start)


def _normalise(
    batch: pa.RecordBatch, layout: _Layout, *, symbol: str, interval_us: int, interval: str
) -> pa.RecordBatch:
    n = batch.num_rows
    ts = _utc_micros(batch.column(layout.time_column))
    if layout.label_is_start:
        ts = pc.cast(pc.add(pc.cast(ts, pa.int64()), interval_us), pa.timestamp("us", tz="UTC"))
    arrays: list[Any] = [ts]
    for name in _OHLCV:
        theirs = layout.columns.get(name)
        if theirs is None:
            arrays.append(pa.nulls(n, pa.float64()).fill_null(float("nan")))
        else:
            arrays.append(pc.cast(batch.column(theirs), pa.float64()))
    for name, default in (("symbol", symbol), ("interval", interval)):
        theirs = layout.columns.get(name)
        if theirs is None:
            arrays.append(pa.array([default] * n, pa.string()))
        else:
            arrays.append(pc.cast(batch.column(theirs), pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=BAR_SCHEMA)


def _infer_interval(batch: pa.RecordBatch, layout: _Layout) -> int:
    ts = _utc_micros(batch.column(layout.time_column).slice(0, 101))
    values = pc.cast(ts, pa.int64()).to_numpy()
    diffs = np.diff(values)
    diffs = diffs[diffs > 0]
    if not len(diffs):
        return _US["d"]
    return int(np.median(diffs))


# --------------------------------------------------------------------------- sources


class FileBars(BarSource):
    """One CSV or Parquet file of one symbol, streamed batch by batch.

    Args:
        path: ``.csv`` (any case) or Parquet.
        symbol: default for files without a ``symbol`` column (default: the file's stem).
        interval: e.g. ``1d``; default: a ``interval`` column, else the median bar spacing.
        selector: the data universe (default: the symbol, upper-cased).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        symbol: str | None = None,
        interval: str | None = None,
        selector: str | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(str(path), "", "no such data file")
        self.symbol = symbol or self.path.stem
        self.interval = interval
        self.selector = selector or _as_selector(self.symbol)

    def describe(self) -> str:
        return f"{self.path} ({self.symbol})"

    def _raw(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        if self.path.suffix.lower() == ".csv":
            reader = pacsv.open_csv(
                self.path, read_options=pacsv.ReadOptions(block_size=max(1 << 16, batch_rows * 64))
            )
            yield from reader
        else:
            yield from pq.ParquetFile(self.path).iter_batches(batch_size=batch_rows)

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        layout: _Layout | None = None
        interval_us = 0
        interval = ""
        for raw in self._raw(batch_rows):
            if raw.num_rows == 0:
                continue
            if layout is None:
                layout = _Layout.detect(raw.schema.names, str(self.path))
                if self.interval is not None:
                    interval_us = parse_interval(self.interval)
                elif "interval" in layout.columns:
                    interval_us = parse_interval(str(raw.column(layout.columns["interval"])[0]))
                else:
                    interval_us = _infer_interval(raw, layout)
                interval = self.interval or format_interval(interval_us)
            batch = _normalise(
                raw, layout, symbol=self.symbol, interval_us=interval_us, interval=interval
            )
            yield from _rechunk(batch, batch_rows)


class TableBars(BarSource):
    """An in-memory Arrow table already in `BAR_SCHEMA` (tests and benchmarks)."""

    def __init__(self, table: pa.Table, *, selector: str = "MEM") -> None:
        self.table = table.cast(BAR_SCHEMA)
        self.selector = selector

    def describe(self) -> str:
        return f"table of {self.table.num_rows} bars"

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        symbols = pc.unique(self.table.column("symbol")).to_pylist()
        if len(symbols) <= 1:
            yield from self.table.to_batches(max_chunksize=batch_rows)
            return
        streams = [
            self.table.filter(pc.equal(self.table.column("symbol"), s)).to_batches(
                max_chunksize=batch_rows
            )
            for s in symbols
        ]
        yield from merge_by_time([iter(s) for s in streams])


class HiveDataset(BarSource):
    """``<root>/selector=<SEL>/symbol=<SYM>/date=<YYYY-MM-DD>/*.parquet``, merged across symbols.

    Args:
        root: the dataset root (holding ``selector=…`` folders).
        selector: which data universe.
        symbols: restrict to these (default: every ``symbol=`` folder, sorted).
        start, end: inclusive date-partition bounds (pruned before any file is opened).
    """

    def __init__(
        self,
        root: str | Path,
        selector: str,
        *,
        symbols: Sequence[str] | None = None,
        start: date | None = None,
        end: date | None = None,
    ) -> None:
        self.root = Path(root)
        self.selector = selector
        self.base = self.root / f"selector={selector}"
        if not self.base.is_dir():
            raise ConfigError(str(self.base), "", "no such dataset folder")
        found = sorted(p.name.partition("=")[2] for p in self.base.glob("symbol=*") if p.is_dir())
        self.symbols = list(symbols) if symbols else found
        unknown = sorted(set(self.symbols) - set(found))
        if unknown:
            raise ConfigError(str(self.base), "symbol", f"not in the dataset: {unknown}")
        if not self.symbols:
            raise ConfigError(str(self.base), "symbol", "the dataset holds no symbol folders")
        self.start = start
        self.end = end

    def describe(self) -> str:
        return f"{self.base} ({', '.join(self.symbols)})"

    def files(self, symbol: str) -> list[Path]:
        """The symbol's Parquet files in replay order: by date partition, then file name."""
        out: list[Path] = []
        for folder in sorted((self.base / f"symbol={symbol}").glob("date=*")):
            day = date.fromisoformat(folder.name.partition("=")[2])
            if (self.start and day < self.start) or (self.end and day > self.end):
                continue
            out.extend(sorted(folder.glob("*.parquet")))
        return out

    def _stream(self, symbol: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        for path in self.files(symbol):
            source = FileBars(path, symbol=symbol, selector=self.selector)
            yield from source.batches(batch_rows)

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        streams = [self._stream(s, batch_rows) for s in self.symbols]
        if len(streams) == 1:
            yield from streams[0]
        else:
            yield from merge_by_time(streams)


# --------------------------------------------------------------------------- merging


def _rechunk(batch: pa.RecordBatch, rows: int) -> Iterator[pa.RecordBatch]:
    for offset in range(0, batch.num_rows, rows):
        yield batch.slice(offset, rows)


def _ts(batch: pa.RecordBatch) -> np.ndarray[Any, np.dtype[np.int64]]:
    out: np.ndarray[Any, np.dtype[np.int64]] = pc.cast(batch.column(0), pa.int64()).to_numpy()
    return out


def merge_by_time(streams: Sequence[Iterator[pa.RecordBatch]]) -> Iterator[pa.RecordBatch]:
    """K-way merge of time-sorted streams into time-sorted batches.

    Holds one batch per stream. Each round emits every buffered row up to the smallest
    "last buffered ts" of the live streams (nothing later can precede them), ordered by
    (ts, stream index), so ties between symbols resolve in stream order within a round.
    """
    buffers: list[pa.RecordBatch | None] = [None] * len(streams)
    times: list[np.ndarray[Any, np.dtype[np.int64]] | None] = [None] * len(streams)
    live = list(range(len(streams)))

    def refill(i: int) -> None:
        for batch in streams[i]:
            if batch.num_rows:
                buffers[i], times[i] = batch, _ts(batch)
                return
        buffers[i], times[i] = None, None

    for i in live:
        refill(i)
    while True:
        live = [i for i in live if buffers[i] is not None]
        if not live:
            return
        bound = min(int(t[-1]) for i in live if (t := times[i]) is not None)
        parts: list[pa.RecordBatch] = []
        keys: list[np.ndarray[Any, np.dtype[np.int64]]] = []
        order: list[np.ndarray[Any, np.dtype[np.int64]]] = []
        for i in live:
            batch, ts = buffers[i], times[i]
            assert batch is not None
            assert ts is not None
            cut = int(np.searchsorted(ts, bound, side="right"))
            if cut == 0:
                continue
            parts.append(batch.slice(0, cut))
            keys.append(ts[:cut])
            order.append(np.full(cut, i, dtype=np.int64))
            if cut == len(ts):
                refill(i)
            else:
                buffers[i], times[i] = batch.slice(cut), ts[cut:]
        if len(parts) == 1:
            yield parts[0]
            continue
        table = pa.Table.from_batches(parts).combine_chunks()
        perm = np.lexsort((np.concatenate(order), np.concatenate(keys)))
        yield from table.take(pa.array(perm)).to_batches()


# --------------------------------------------------------------------------- resolving


def _as_selector(name: str) -> str:
    text = re.sub(r"[^A-Z0-9_]", "_", name.upper())[:32]
    return text if is_valid_id(text) else "DATA"


def default_data_root() -> Path:
    """`VIRTUFIN_DATA_ROOT`, else ``<VIRTUFIN_STATE_DIR or .virtufin>/data``."""
    root = os.environ.get(DATA_ROOT_ENV)
    if root:
        return Path(root)
    return Path(os.environ.get("VIRTUFIN_STATE_DIR") or ".virtufin") / "data"


def open_source(
    spec: str | Path,
    *,
    data_root: str | Path | None = None,
    symbols: Sequence[str] | None = None,
    interval: str | None = None,
) -> BarSource:
    """Resolve ``--data``: a CSV/Parquet file, a dataset folder, or a selector name.

    A folder is either a ``selector=<SEL>`` folder or a root holding exactly one of them; a
    bare name matching ``^[A-Z0-9_]{1,32}$`` is looked up under `data_root`
    (default `default_data_root()`).
    """
    path = Path(spec)
    if path.is_file():
        symbol = symbols[0] if symbols else None
        return FileBars(path, symbol=symbol, interval=interval)
    if path.is_dir():
        if path.name.startswith("selector="):
            return HiveDataset(path.parent, path.name.partition("=")[2], symbols=symbols)
        found = sorted(p.name.partition("=")[2] for p in path.glob("selector=*"))
        if len(found) != 1:
            raise ConfigError(str(path), "selector", f"expected one selector=… folder ({found})")
        return HiveDataset(path, found[0], symbols=symbols)
    text = str(spec)
    if is_valid_id(text):
        root = Path(data_root) if data_root is not None else default_data_root()
        return HiveDataset(root, text, symbols=symbols)
    raise ConfigError(text, "", "neither a data file, a dataset folder nor a selector")
