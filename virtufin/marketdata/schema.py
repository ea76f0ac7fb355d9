"""The bar dataset's schema, names and small helpers shared by every market-data module.

Dataset layout (docs/dagster.md): ``<root>/selector=<SEL>/symbol=<SYM>/date=<YYYY-MM-DD>/
part-0.parquet`` (zstd), one file per partition, rows sorted by ``ts``. ``ts`` is the bar's
*close* time; the partition ``date`` is the UTC date of the bar's *start* (``ts - interval``),
so a daily bar of 2024-01-02 closes at 2024-01-03T00:00Z and lives in ``date=2024-01-02``,
the convention backtesting.py's ``Date`` column and `virtufin.backtest` use.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Final

import pyarrow as pa

from virtufin.errors import ConfigError

__all__ = [
    "BAR_COLUMNS",
    "BAR_SCHEMA",
    "DEFAULT_INTERVAL",
    "DEFAULT_SELECTOR",
    "PART_FILE_NAME",
    "QUARANTINE_DIR",
    "QUARANTINE_SCHEMA",
    "SYMBOL_RE",
    "empty_bars",
    "interval_delta",
    "session_date",
    "validate_symbol",
]

BAR_SCHEMA: Final = pa.schema(
    [
        ("ts", pa.timestamp("us", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("symbol", pa.string()),
        ("interval", pa.string()),
    ]
)
"""Columns of every bar file; ``ts`` is the bar's close time in UTC."""

QUARANTINE_SCHEMA: Final = BAR_SCHEMA.append(pa.field("reason", pa.string())).append(
    pa.field("source", pa.string())
)
"""Quarantined rows: the bar columns plus why the row was rejected and where it came from."""

BAR_COLUMNS: Final = tuple(BAR_SCHEMA.names)
DEFAULT_SELECTOR: Final = "SYNTH_DAILY"
DEFAULT_INTERVAL: Final = "1d"
QUARANTINE_DIR: Final = "_quarantine"
PART_FILE_NAME: Final = "part-0.parquet"
SYMBOL_RE: Final = re.compile(r"^[A-Za-z0-9_\-:]{1,32}$")
_INTERVAL_RE: Final = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def validate_symbol(symbol: str) -> str:
    """Return `symbol` if it can be a topic token and a partition key, else raise.

    Raises:
        ConfigError: the symbol has characters other than letters, digits, ``_ - :``.
    """
    if not SYMBOL_RE.match(symbol):
        raise ConfigError("market data", "symbol", f"{symbol!r} must match {SYMBOL_RE.pattern}")
    return symbol


def interval_delta(interval: str) -> timedelta:
    """The length of an interval token (``1m``, ``5m``, ``1h``, ``1d``, ``1w``).

    Raises:
        ConfigError: not ``<n><s|m|h|d|w>``.
    """
    match = _INTERVAL_RE.match(interval)
    if match is None or int(match.group(1)) == 0:
        raise ConfigError("market data", "interval", f"{interval!r} is not <n><s|m|h|d|w>")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def session_date(ts: datetime, interval: str) -> date:
    """The partition date of a bar closing at `ts`: the UTC date of its start."""
    return (ts.astimezone(UTC) - interval_delta(interval)).date()


def empty_bars() -> pa.Table:
    """A table with no rows in `BAR_SCHEMA`."""
    return BAR_SCHEMA.empty_table()
