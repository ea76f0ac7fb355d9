"""Market-data sources: one abstract resource, three implementations.

Assets depend on `MarketDataSource` only; `pipelines.resources.resources_for` picks one:

- `SyntheticSource`: the seeded generator (embedded default, selector ``SYNTH_DAILY``);
- `DropFolderSource`: CSV/Parquet files vendors drop into a folder;
- `RecordedSource`: bars the `BarRecorder` appended from the live bus.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import date
from typing import ClassVar

import dagster as dg
import pyarrow as pa
from pydantic import Field

from virtufin.marketdata import (
    DEFAULT_SELECTOR,
    RECORDED_SELECTOR,
    DropFolder,
    SessionCalendar,
    SyntheticGenerator,
    read_partition,
)

__all__ = [
    "DropFolderSource",
    "MarketDataSource",
    "RecordedSource",
    "SourceRows",
    "SyntheticSource",
]


@dataclass(frozen=True, slots=True)
class SourceRows:
    """Rows a source delivered for one partition (`BAR_SCHEMA`, unvalidated), their origin,
    and how many earlier deliveries of the same bars later ones superseded."""

    table: pa.Table
    sources: list[str] = field(default_factory=list)
    superseded: int = 0


class MarketDataSource(dg.ConfigurableResource, ABC):  # type: ignore[type-arg]
    """Where bars come from. Subclasses implement `fetch`.

    | member              | required | notes                                               |
    |---------------------|----------|-----------------------------------------------------|
    | fetch               | yes      | rows of one (symbol, date) partition, any order     |
    | changed_partitions  | no       | partitions with new deliveries (drives the sensor)  |
    | describe            | no       | one line for metadata                               |
    """

    selector: str = Field(
        default=DEFAULT_SELECTOR, description="data universe the bars are filed under"
    )
    calendar: str = Field(default="xnys", description="session calendar: xnys, weekdays, always")

    @abstractmethod
    def fetch(self, symbol: str, day: date) -> SourceRows:
        raise NotImplementedError("MarketDataSource.fetch")

    def session_calendar(self) -> SessionCalendar:
        return SessionCalendar(self.calendar)

    def changed_partitions(self, *, since_ns: int) -> tuple[set[tuple[str, date]], int]:
        """(symbol, date) partitions delivered after `since_ns`, and the new cursor."""
        return set(), since_ns

    def describe(self) -> str:
        return type(self).__name__


class SyntheticSource(MarketDataSource):
    """Seeded synthetic daily bars, deterministic per (selector, symbol, date)."""

    def fetch(self, symbol: str, day: date) -> SourceRows:
        generator = SyntheticGenerator(selector=self.selector, calendar=self.session_calendar())
        table = generator.bars(symbol, day)
        return SourceRows(table, [f"synthetic:{self.selector}"] * table.num_rows)

    def describe(self) -> str:
        return f"synthetic generator ({self.selector}, {self.calendar})"


class DropFolderSource(MarketDataSource):
    """CSV/Parquet vendor files in a drop folder (layouts: `virtufin.marketdata.vendor`)."""

    folder: str = Field(description="the drop folder, searched recursively")
    interval: str | None = Field(default=None, description="force a bar interval token (1d, 1h)")

    _folders: ClassVar[dict[tuple[str, str | None], DropFolder]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def _drop(self) -> DropFolder:
        key = (self.folder, self.interval)
        with self._lock:
            found = self._folders.get(key)
            if found is None:
                found = self._folders[key] = DropFolder(self.folder, interval=self.interval)
        return found

    def fetch(self, symbol: str, day: date) -> SourceRows:
        rows = self._drop().rows(symbol, day)
        return SourceRows(rows.table, rows.sources, rows.superseded)

    def changed_partitions(self, *, since_ns: int) -> tuple[set[tuple[str, date]], int]:
        drop = self._drop()
        files = drop.files()
        newest = max((p.stat().st_mtime_ns for p in files), default=since_ns)
        return drop.partitions(modified_after_ns=since_ns), max(newest, since_ns)

    def describe(self) -> str:
        return f"drop folder {self.folder}"


class RecordedSource(MarketDataSource):
    """Bars the `BarRecorder` appended from ``act.exchange.>`` to its own dataset."""

    selector: str = Field(
        default=RECORDED_SELECTOR, description="data universe the bars are filed under"
    )
    root: str = Field(description="the recorder's dataset root")
    recorded_selector: str = Field(
        default=RECORDED_SELECTOR, description="the selector the recorder writes under"
    )

    def fetch(self, symbol: str, day: date) -> SourceRows:
        table = read_partition(self.root, self.recorded_selector, symbol, day)
        return SourceRows(table, [f"recorder:{self.root}"] * table.num_rows)

    def describe(self) -> str:
        return f"recorder dataset {self.root}"
