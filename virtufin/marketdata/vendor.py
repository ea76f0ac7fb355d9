"""Vendor files in a drop folder: CSV or Parquet bars in the common layouts, normalised.

Accepted layouts (column names are matched case-insensitively):

- a time column: ``ts`` (the bar's *close* time) or ``date``/``datetime``/``time``/
  ``timestamp`` (the bar's *start*, as backtesting.py's ``Date``; ``ts = start + interval``);
  values are ISO dates or date-times (naive = UTC), or epoch numbers: seconds below 1e11,
  milliseconds below 1e14, microseconds above;
- ``open, high, low, close`` (required), ``volume`` (optional: 0 when absent; ``Adj Close`` and
  other columns are ignored);
- ``symbol`` or ``ticker`` (optional; otherwise the file's stem or folder names the symbol);
- ``interval`` (optional; otherwise the configured one, else the median bar spacing).

A file without a symbol column is named by its folder (``<SYM>/…``) or the start of its name
(``<SYM>.csv``, ``<SYM>_2024.parquet``); a file with one may hold many symbols. Files are read
in modification-time order, so a later delivery of the same bar wins.

Example:
    >>> table = read_vendor_file("GOOG.csv")                     # doctest: +SKIP
    >>> table.schema == BAR_SCHEMA                               # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import os
import threading
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
from virtufin.marketdata.schema import BAR_SCHEMA, empty_bars, interval_delta, validate_symbol
from virtufin.marketdata.validation import session_dates

__all__ = ["VENDOR_SUFFIXES", "DropFolder", "VendorRows", "format_interval", "read_vendor_file"]

log = logging.getLogger(__name__)
VENDOR_SUFFIXES: Final = (".csv", ".parquet", ".pq")
_START_COLUMNS: Final = ("date", "datetime", "time", "timestamp")
_SYMBOL_COLUMNS: Final = ("symbol", "ticker")
_UNITS: Final = (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


def format_interval(seconds: int) -> str:
    """The shortest interval token for a whole number of seconds (``86400`` → ``1d``)."""
    for unit, size in _UNITS:
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise ConfigError("market data", "interval", f"{seconds} s is not a usable bar interval")


def _to_utc_micros(column: pa.ChunkedArray, where: str) -> pa.Array:
    """Any time-like column as int64 microseconds since the epoch, UTC."""
    arr = column.combine_chunks()
    kind = arr.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
        finite = values[np.isfinite(values)]
        biggest = float(np.abs(finite).max()) if finite.size else 0.0
        scale = 1.0 if biggest >= 1e14 else 1_000.0 if biggest >= 1e11 else 1_000_000.0
        return pa.array(np.round(values * scale), pa.float64()).cast(pa.int64())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        zoned = pc.any(pc.match_substring_regex(arr, r"(Z|[+-]\d\d:?\d\d)$")).as_py()
        try:
            arr = pc.cast(arr, pa.timestamp("us", tz="UTC") if zoned else pa.timestamp("us"))
        except pa.ArrowInvalid as exc:
            raise ConfigError(where, "time", f"unparseable date/time values ({exc})") from None
        kind = arr.type
    if pa.types.is_date(kind):
        arr = pc.cast(pc.cast(arr, pa.date32()), pa.timestamp("us"))
        kind = arr.type
    if not pa.types.is_timestamp(kind):
        raise ConfigError(where, "time", f"column type {kind} is not a date/time")
    # naive values are UTC; the int64 of a zoned timestamp is already UTC-based
    return pc.cast(pc.cast(arr, pa.timestamp("us", tz=kind.tz)), pa.int64())


def _infer_interval_seconds(micros: np.ndarray[Any, np.dtype[np.int64]]) -> int:
    diffs = np.diff(np.unique(micros))
    if diffs.size == 0:
        return 86_400
    seconds = round(float(np.median(diffs)) / 1e6)
    if seconds >= 86_400:  # weekends and holidays stretch daily spacing; daily it is
        return 86_400 if seconds < 7 * 86_400 else 7 * 86_400
    return max(seconds, 1)


def read_vendor_file(
    path: str | os.PathLike[str], *, symbol: str | None = None, interval: str | None = None
) -> pa.Table:
    """Read one vendor file into `BAR_SCHEMA` (not validated, not sorted).

    Args:
        symbol: for files without a symbol column (default: the file's stem).
        interval: bar length token; default: an ``interval`` column, else the median spacing.

    Raises:
        ConfigError: unreadable file, no time column, or missing OHLC columns.
    """
    file = Path(path)
    where = str(file)
    try:
        raw = pacsv.read_csv(file) if file.suffix.lower() == ".csv" else pq.read_table(file)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConfigError(where, "", f"cannot be read ({exc})") from None
    lower = {name.lower().strip(): name for name in raw.column_names}
    if "ts" in lower:
        time_name, is_start = lower["ts"], False
    else:
        found = next((lower[c] for c in _START_COLUMNS if c in lower), None)
        if found is None:
            raise ConfigError(where, "time", "no ts, date, datetime, time or timestamp column")
        time_name, is_start = found, True
    missing = [c for c in ("open", "high", "low", "close") if c not in lower]
    if missing:
        raise ConfigError(where, ",".join(missing), "missing OHLC column(s)")
    n = raw.num_rows
    micros = _to_utc_micros(raw.column(time_name), where)
    if interval is not None:
        token = interval
    elif "interval" in lower and n:
        token = str(raw.column(lower["interval"])[0].as_py())
    else:
        token = format_interval(_infer_interval_seconds(micros.to_numpy(zero_copy_only=False)))
    step_us = int(interval_delta(token).total_seconds() * 1_000_000)
    if is_start:
        micros = pc.add(micros, step_us)
    symbol_name = next((lower[c] for c in _SYMBOL_COLUMNS if c in lower), None)
    if symbol_name is not None:
        symbols: pa.Array = pc.cast(raw.column(symbol_name), pa.string()).combine_chunks()
    else:
        symbols = pa.array([symbol or file.stem] * n, pa.string())
    columns: list[Any] = [micros.cast(pa.timestamp("us", tz="UTC"))]
    for name in ("open", "high", "low", "close", "volume"):
        if name in lower:
            columns.append(pc.cast(raw.column(lower[name]), pa.float64()).combine_chunks())
        else:
            columns.append(pa.array(np.zeros(n), pa.float64()))
    columns += [symbols, pa.array([token] * n, pa.string())]
    return pa.Table.from_arrays(columns, schema=BAR_SCHEMA)


@dataclass(frozen=True, slots=True)
class VendorRows:
    """Rows of one symbol and day from a drop folder, the file each row came from, and how
    many rows a later file superseded (same ts: the later delivery replaces the earlier)."""

    table: pa.Table
    sources: list[str]
    superseded: int = 0


def _latest_delivery(table: pa.Table, sources: list[str]) -> VendorRows:
    """Keep, per ts, the row of the last file that delivered it (files come oldest first)."""
    ts = pc.cast(table.column("ts"), pa.int64()).to_pylist()
    last: dict[Any, int] = {}
    for i, t in enumerate(ts):
        if t is None:
            last[("null", i)] = i
            continue
        previous = last.get(t)
        if previous is not None and sources[previous] == sources[i]:
            last[("dup", i)] = i  # a duplicate inside one file: validation quarantines it
            continue
        last[t] = i
    keep = sorted(last.values())
    if len(keep) == len(ts):
        return VendorRows(table, sources)
    return VendorRows(
        table.take(pa.array(keep, pa.int64())),
        [sources[i] for i in keep],
        superseded=len(ts) - len(keep),
    )


class DropFolder:
    """A folder vendors drop bar files into.

    Args:
        folder: where the files are (searched recursively).
        interval: force an interval token instead of detecting it.
    """

    def __init__(self, folder: str | os.PathLike[str], *, interval: str | None = None) -> None:
        self.folder = Path(folder)
        self.interval = interval
        self._cache: dict[tuple[str, int, int], pa.Table] = {}
        self._lock = threading.Lock()

    def files(self) -> list[Path]:
        """Every vendor file, oldest modification first (later deliveries win)."""
        if not self.folder.is_dir():
            return []
        found = [
            p
            for p in self.folder.rglob("*")
            if p.is_file() and p.suffix.lower() in VENDOR_SUFFIXES and not p.name.startswith(".")
        ]
        return sorted(found, key=lambda p: (p.stat().st_mtime_ns, str(p)))

    def _named_symbol(self, path: Path) -> str:
        """The symbol a file's folder or name gives it: ``<SYM>/…`` or ``<SYM>[_…].csv``."""
        relative = path.relative_to(self.folder)
        if len(relative.parts) > 1:
            return relative.parts[0]
        return path.stem.split("_", 1)[0] or path.stem

    def _read(self, path: Path, symbol: str) -> pa.Table:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = read_vendor_file(path, symbol=symbol, interval=self.interval)
            with self._lock:
                self._cache[key] = cached
        return cached

    def rows(self, symbol: str, day: date | None = None) -> VendorRows:
        """Every delivered row of `symbol` (optionally only those of partition `day`)."""
        validate_symbol(symbol)
        tables: list[pa.Table] = []
        sources: list[str] = []
        for path in self.files():
            table = self._read(path, self._named_symbol(path))
            table = table.filter(pc.equal(table.column("symbol"), symbol))
            if day is not None and table.num_rows:
                keep = [d == day for d in session_dates(table)]
                table = table.filter(pa.array(keep, pa.bool_()))
            if table.num_rows:
                tables.append(table)
                sources += [str(path)] * table.num_rows
        if not tables:
            return VendorRows(empty_bars(), [])
        return _latest_delivery(pa.concat_tables(tables), sources)

    def partitions(self, *, modified_after_ns: int = 0) -> set[tuple[str, date]]:
        """(symbol, date) partitions touched by files modified after `modified_after_ns`."""
        out: set[tuple[str, date]] = set()
        for path in self.files():
            if path.stat().st_mtime_ns <= modified_after_ns:
                continue
            try:
                table = self._read(path, self._named_symbol(path))
            except ConfigError as exc:
                log.warning("skipping unreadable vendor file %s: %s", path, exc)
                continue
            pairs = zip(table.column("symbol").to_pylist(), session_dates(table), strict=True)
            out.update((s, d) for s, d in pairs if s is not None and d != date.min)
        return out
