"""Bar validation: split rows into good and quarantined (with a reason), and measure stored data.

Row rules (a row may break several; its ``reason`` lists them joined by ``;``):

| reason              | rule                                                        | category   |
|---------------------|-------------------------------------------------------------|------------|
| `null_value`        | ts, open, high, low, close or volume is null or NaN         | schema     |
| `symbol_mismatch`   | the row's symbol is not the partition's                      | schema     |
| `non_positive_price`| open, high, low or close ≤ 0                                | ohlc       |
| `ohlc_inconsistent` | not ``low ≤ min(open, close) ≤ max(open, close) ≤ high``    | ohlc       |
| `negative_volume`   | volume < 0                                                   | ohlc       |
| `off_session`       | the bar's date is not a session of the calendar              | gaps       |
| `duplicate_ts`      | an earlier row of the same delivery with the same ts (the    | duplicates |
|                     | last one is kept: the newest delivery wins)                  |            |

Categories are what the pipelines' asset checks report on: `schema`, `monotonic`, `ohlc`,
`duplicates`, `gaps`.

`split_valid` first asks, in a handful of vectorised operations, whether the delivery is clean
(no row breaks any rule, one symbol and interval, ``ts`` strictly increasing): the usual case,
returned as is. Anything else goes through the per-rule pass, which names every reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from virtufin.marketdata.calendar import SessionCalendar
from virtufin.marketdata.schema import BAR_SCHEMA, QUARANTINE_SCHEMA, interval_delta

__all__ = [
    "CATEGORIES",
    "REASON_CATEGORY",
    "Validated",
    "as_bars",
    "count_by_category",
    "count_duplicates",
    "count_non_monotonic",
    "count_ohlc_violations",
    "missing_sessions",
    "schema_differences",
    "session_dates",
    "split_valid",
]

CATEGORIES: Final = ("schema", "monotonic", "ohlc", "duplicates", "gaps")
REASON_CATEGORY: Final = {
    "null_value": "schema",
    "symbol_mismatch": "schema",
    "non_positive_price": "ohlc",
    "ohlc_inconsistent": "ohlc",
    "negative_volume": "ohlc",
    "off_session": "gaps",
    "duplicate_ts": "duplicates",
}
_PRICES: Final = ("open", "high", "low", "close")
_NO_REJECTS: Final = QUARANTINE_SCHEMA.empty_table()  # immutable; built once (~40 µs a time)
_BOOL = np.ndarray[Any, np.dtype[np.bool_]]


@dataclass(frozen=True, slots=True)
class Validated:
    """Rows that passed (`BAR_SCHEMA`, sorted by ts) and rows that did not (`QUARANTINE_SCHEMA`)."""

    good: pa.Table
    rejected: pa.Table

    def rejected_by_category(self) -> dict[str, int]:
        return count_by_category(self.rejected)


def _f64(table: pa.Table, name: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    column = table.column(name)
    if column.null_count:
        column = pc.fill_null(column, float("nan"))
    out: np.ndarray[Any, np.dtype[np.float64]] = column.to_numpy().astype(np.float64, copy=False)
    return out


def as_bars(table: pa.Table) -> pa.Table:
    """`table` in `BAR_SCHEMA` column order and types (no copy when it already is)."""
    if table.schema.equals(BAR_SCHEMA):
        return table
    return table.select(list(BAR_SCHEMA.names)).cast(BAR_SCHEMA)


_DAY_US: Final = 86_400_000_000
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_MAX_DAY: Final = date.max.toordinal() - _EPOCH_ORDINAL


@lru_cache(maxsize=64)
def _interval_micros(interval: str) -> int:
    """`interval_delta` in microseconds (raises the same `ConfigError` for a bad token)."""
    return int(interval_delta(interval).total_seconds() * 1_000_000)


def _ts_micros(table: pa.Table) -> tuple[np.ndarray[Any, np.dtype[np.int64]], _BOOL]:
    """``ts`` as int64 microseconds (nulls as 0) and the null mask."""
    ts = pc.cast(table.column("ts"), pa.int64())
    if ts.null_count:
        nulls: _BOOL = pc.is_null(ts).to_numpy(zero_copy_only=False)
        return pc.fill_null(ts, 0).to_numpy(), nulls
    return ts.to_numpy(), np.zeros(len(ts), dtype=bool)


def _day_numbers(
    table: pa.Table, ts: np.ndarray[Any, np.dtype[np.int64]], nulls: _BOOL
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Days since 1970-01-01 of each row's bar start (``ts - interval``); null ts → -1e9."""
    start = ts.astype(np.int64, copy=True)
    intervals = table.column("interval").combine_chunks()
    first = intervals[0].as_py() if len(intervals) else None
    if (
        first is not None
        and intervals.null_count == 0
        and pc.all(pc.equal(intervals, first)).as_py()
    ):
        start -= _interval_micros(first)
    else:
        for token in pc.unique(intervals).to_pylist():
            step = _interval_micros(token or "1d")
            if token is None:
                mask = pc.is_null(intervals).to_numpy(zero_copy_only=False)
            else:
                mask = pc.equal(intervals, token).fill_null(False).to_numpy(zero_copy_only=False)
            start[mask] -= step
    days: np.ndarray[Any, np.dtype[np.int64]] = start // _DAY_US
    days[nulls] = -1_000_000_000
    return days


def session_dates(table: pa.Table) -> list[date]:
    """The partition date of every row: the UTC date of ``ts - interval`` (null ts: date.min)."""
    days = _day_numbers(table, *_ts_micros(table))
    cache: dict[int, date] = {}
    out: list[date] = []
    for day in days.tolist():
        found = cache.get(day)
        if found is None:
            found = cache[day] = (
                date.min if day < -700_000 else date.fromordinal(_EPOCH_ORDINAL + day)
            )
        out.append(found)
    return out


def _off_session(days: np.ndarray[Any, np.dtype[np.int64]], calendar: SessionCalendar) -> _BOOL:
    unique = np.unique(days)
    closed = [
        d
        for d in unique.tolist()
        if d > -700_000 and not calendar.is_session(date.fromordinal(_EPOCH_ORDINAL + d))
    ]
    out: _BOOL = np.isin(days, np.array(closed, dtype=np.int64))
    return out


def _ohlc_masks(table: pa.Table, ts_null: _BOOL) -> tuple[_BOOL, _BOOL, _BOOL, _BOOL]:
    """(null_value, non_positive_price, ohlc_inconsistent, negative_volume) per row."""
    o, h, lo, c, v = (_f64(table, n) for n in (*_PRICES, "volume"))
    null = ts_null | np.isnan(o) | np.isnan(h) | np.isnan(lo) | np.isnan(c) | np.isnan(v)
    with np.errstate(invalid="ignore"):
        non_positive = (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0)
        body_low = np.minimum(o, c)
        body_high = np.maximum(o, c)
        inconsistent = (lo > body_low) | (h < body_high) | (lo > h)
        negative_volume = v < 0
    return null, non_positive & ~null, inconsistent & ~null, negative_volume & ~null


_REPEAT_CACHED: Final = 4096


@lru_cache(maxsize=128)
def _repeated(value: str, length: int) -> pa.Array:
    """`value` `length` times (immutable, so shared: a symbol's partitions have equal sizes)."""
    return pa.repeat(value, length)


def _only_value(column: pa.ChunkedArray, value: str | None) -> str | None:
    """The one value every row of a string column holds (`value` if given), else None."""
    if column.null_count or not len(column):
        return None
    if value is None:
        value = column[0].as_py()
    for chunk in column.chunks:
        if len(chunk) <= _REPEAT_CACHED:
            same = chunk.equals(_repeated(value, len(chunk)))
        else:
            same = pc.all(pc.equal(chunk, value)).as_py()
        if not same:
            return None
    return value


def _is_clean(table: pa.Table, calendar: SessionCalendar, symbol: str | None) -> bool:
    """Whether no rule of `split_valid` rejects any row and the rows are already in order.

    True exactly when: no nulls or NaNs; ``0 < low ≤ min(open, close) ≤ max(open, close) ≤
    high`` and ``volume ≥ 0``; one symbol (`symbol`, if given) and one interval; ``ts``
    strictly increasing (so no duplicates, nothing to sort); every bar starts on a session.
    False says nothing about which rule, if any, fails. `table` is in `BAR_SCHEMA`.
    """
    ts_column, *numbers, symbols, intervals = table.columns
    if ts_column.null_count:
        return False
    ts = ts_column.to_numpy().view(np.int64)
    if ts.size > 1 and not bool((ts[1:] > ts[:-1]).all()):
        return False
    # float nulls come out of `to_numpy` as NaN, and NaN fails every comparison
    o, h, lo, c, v = (column.to_numpy() for column in numbers)
    ok = (lo > 0) & (lo <= np.minimum(o, c)) & (h >= np.maximum(o, c)) & (v >= 0)
    if not bool(ok.all()) or _only_value(symbols, symbol) is None:
        return False
    interval = _only_value(intervals, None)
    if interval is None:
        return False
    step = _interval_micros(interval)
    first, last = (int(ts[0]) - step) // _DAY_US, (int(ts[-1]) - step) // _DAY_US
    if first <= -700_000 or last > _MAX_DAY:
        return False  # out of `date`'s range: let the per-rule pass decide
    # ts increase: if the first and last bars start on one day, every bar does
    days = [first] if first == last else np.unique((ts - step) // _DAY_US).tolist()
    return all(calendar.is_session(date.fromordinal(_EPOCH_ORDINAL + d)) for d in days)


def split_valid(
    table: pa.Table,
    *,
    calendar: SessionCalendar,
    source: str | Sequence[str],
    symbol: str | None = None,
) -> Validated:
    """Split an incoming delivery into rows to store and rows to quarantine.

    Args:
        table: rows in `BAR_SCHEMA` (any order).
        calendar: sessions; bars dated on other days are rejected as `off_session`.
        source: recorded in the quarantine's ``source`` column (e.g. a file path); one per
            row, or one for all.
        symbol: the partition's symbol, when the rows must all belong to one.
    """
    table = as_bars(table)
    n = table.num_rows
    if n == 0 or _is_clean(table, calendar, symbol):
        return Validated(table, _NO_REJECTS)
    ts, ts_null = _ts_micros(table)
    null, non_positive, inconsistent, negative_volume = _ohlc_masks(table, ts_null)
    off_session = _off_session(_day_numbers(table, ts, ts_null), calendar) & ~null
    symbols = table.column("symbol")
    if symbol is None or (symbols.null_count == 0 and pc.all(pc.equal(symbols, symbol)).as_py()):
        mismatch = np.zeros(n, dtype=bool)
    else:
        mismatch = pc.not_equal(symbols, symbol).fill_null(True).to_numpy(zero_copy_only=False)
    rules: list[tuple[str, _BOOL]] = [
        ("null_value", null),
        ("symbol_mismatch", mismatch),
        ("non_positive_price", non_positive),
        ("ohlc_inconsistent", inconsistent),
        ("negative_volume", negative_volume),
        ("off_session", off_session),
    ]
    bad = np.zeros(n, dtype=bool)
    for _, mask in rules:
        bad |= mask
    # Among otherwise good rows, the last delivery of a (symbol, ts) wins.
    if symbol is None:
        encoded = pc.dictionary_encode(table.column("symbol").combine_chunks())
        codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    else:
        codes = np.zeros(n, dtype=np.int64)
    duplicate = np.zeros(n, dtype=bool)
    candidates = np.flatnonzero(~bad)
    kept_ts = ts[candidates]
    if symbol is None or not bool(np.all(kept_ts[1:] > kept_ts[:-1])):
        order = candidates[np.lexsort((-candidates, kept_ts, codes[candidates]))]
        same = (ts[order][1:] == ts[order][:-1]) & (codes[order][1:] == codes[order][:-1])
        duplicate[order[1:][same]] = True  # newest first within a key: the later ones are older
    rules.append(("duplicate_ts", duplicate))
    bad |= duplicate
    if not bad.any():
        return _sorted(table, ts, codes, symbol, _NO_REJECTS)
    reasons = [";".join(name for name, mask in rules if mask[i]) for i in np.flatnonzero(bad)]
    rejected = table.filter(pa.array(bad))
    if isinstance(source, str):
        sources = [source] * rejected.num_rows
    else:
        sources = [source[int(i)] for i in np.flatnonzero(bad)]
    rejected = rejected.append_column("reason", pa.array(reasons, pa.string())).append_column(
        "source", pa.array(sources, pa.string())
    )
    good = table.filter(pa.array(~bad))
    return _sorted(good, ts[~bad], codes[~bad], symbol, rejected)


def _sorted(
    good: pa.Table,
    ts: np.ndarray[Any, np.dtype[np.int64]],
    codes: np.ndarray[Any, Any],
    symbol: str | None,
    rejected: pa.Table,
) -> Validated:
    """`good` in (symbol, ts) order (no copy when it already is)."""
    if ts.size < 2:
        return Validated(good, rejected)
    later = (codes[1:] > codes[:-1]) | ((codes[1:] == codes[:-1]) & (ts[1:] > ts[:-1]))
    if symbol is not None and bool(np.all(later)):
        return Validated(good, rejected)
    if symbol is None:
        names = np.array(good.column("symbol").to_pylist(), dtype=str)
        order = np.lexsort((ts, names))
    else:
        order = np.argsort(ts, kind="stable")
    return Validated(good.take(pa.array(order)), rejected)


def count_by_category(rejected: pa.Table) -> dict[str, int]:
    """How many quarantined rows fall in each check category (a row may count in several)."""
    counts = dict.fromkeys(CATEGORIES, 0)
    for reason in rejected.column("reason").to_pylist():
        for part in {REASON_CATEGORY.get(r, "schema") for r in (reason or "").split(";") if r}:
            counts[part] += 1
    return counts


def schema_differences(schema: pa.Schema) -> list[str]:
    """Human-readable differences between `schema` and `BAR_SCHEMA` (empty: identical)."""
    out: list[str] = []
    for field in BAR_SCHEMA:
        if field.name not in schema.names:
            out.append(f"missing column {field.name}")
        elif not schema.field(field.name).type.equals(field.type):
            out.append(f"{field.name} is {schema.field(field.name).type}, not {field.type}")
    out.extend(f"unexpected column {name}" for name in schema.names if name not in BAR_SCHEMA.names)
    return out


def _groups(table: pa.Table) -> Iterable[tuple[str, np.ndarray[Any, np.dtype[np.int64]]]]:
    symbols = np.array(table.column("symbol").to_pylist(), dtype=object)
    ts = pc.cast(table.column("ts"), pa.int64()).fill_null(0).to_numpy()
    for symbol in dict.fromkeys(symbols.tolist()):
        yield str(symbol), ts[symbols == symbol]


def count_non_monotonic(table: pa.Table) -> int:
    """Rows whose ts is not strictly after the previous row's of the same symbol."""
    return sum(int((np.diff(ts) <= 0).sum()) for _, ts in _groups(table))


def count_duplicates(table: pa.Table) -> int:
    """Rows beyond the first for each (symbol, ts)."""
    return sum(len(ts) - len(np.unique(ts)) for _, ts in _groups(table))


def count_ohlc_violations(table: pa.Table) -> int:
    """Rows with a null, a non-positive price, inconsistent OHLC or negative volume."""
    if table.num_rows == 0:
        return 0
    masks = _ohlc_masks(table, _ts_micros(table)[1])
    return int(np.logical_or.reduce(masks).sum())


def missing_sessions(
    table: pa.Table, calendar: SessionCalendar, symbols: Sequence[str], start: date, end: date
) -> list[tuple[str, date]]:
    """Sessions in ``[start, end]`` with no bar, per symbol, in (symbol, date) order."""
    have: dict[str, set[date]] = {s: set() for s in symbols}
    if table.num_rows:
        for sym, day in zip(table.column("symbol").to_pylist(), session_dates(table), strict=True):
            have.setdefault(sym, set()).add(day)
    sessions = calendar.sessions(start, end)
    return [(s, d) for s in symbols for d in sessions if d not in have[s]]
