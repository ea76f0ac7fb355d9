"""Partitions of the bar assets: one per (date, symbol), the start date named once.

The symbol list is configuration: ``VIRTUFIN_SYMBOLS`` (comma-separated), default the synthetic
universe ``AAA,BBB,CCC``. ``VIRTUFIN_BARS_START`` moves the first date (default
`BARS_START_DATE`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Final

import dagster as dg

from virtufin.errors import ConfigError
from virtufin.marketdata.schema import validate_symbol

__all__ = [
    "BARS_START_DATE",
    "DATE_DIMENSION",
    "DEFAULT_SYMBOLS",
    "SYMBOL_DIMENSION",
    "Universe",
    "bar_partition_key",
    "daily_bars_partitions",
]

BARS_START_DATE: Final = "2024-01-01"
DEFAULT_SYMBOLS: Final = ("AAA", "BBB", "CCC")
DATE_DIMENSION: Final = "date"
SYMBOL_DIMENSION: Final = "symbol"


@dataclass(frozen=True, slots=True)
class Universe:
    """The symbols ingested and the first date of the daily partitions."""

    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    start_date: str = BARS_START_DATE

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ConfigError("universe", "symbols", "at least one symbol is needed")
        for symbol in self.symbols:
            validate_symbol(symbol)  # also keeps out | [ ] , which break multi-partition keys
        date.fromisoformat(self.start_date)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Universe:
        """``VIRTUFIN_SYMBOLS`` and ``VIRTUFIN_BARS_START`` over the defaults."""
        env = os.environ if env is None else env
        raw = env.get("VIRTUFIN_SYMBOLS", "")
        symbols = tuple(s.strip() for s in raw.split(",") if s.strip()) or DEFAULT_SYMBOLS
        return cls(symbols=symbols, start_date=env.get("VIRTUFIN_BARS_START") or BARS_START_DATE)

    def with_symbols(self, symbols: Sequence[str]) -> Universe:
        return Universe(symbols=tuple(symbols), start_date=self.start_date)


def daily_bars_partitions(universe: Universe) -> dg.MultiPartitionsDefinition:
    """date (daily from the start date) × symbol (static, from the universe)."""
    return dg.MultiPartitionsDefinition(
        {
            DATE_DIMENSION: dg.DailyPartitionsDefinition(start_date=universe.start_date),
            SYMBOL_DIMENSION: dg.StaticPartitionsDefinition(list(universe.symbols)),
        }
    )


def bar_partition_key(day: date, symbol: str) -> dg.MultiPartitionKey:
    """The partition key of one symbol's bars on one date."""
    return dg.MultiPartitionKey({DATE_DIMENSION: day.isoformat(), SYMBOL_DIMENSION: symbol})
