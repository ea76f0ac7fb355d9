"""Data-quality checks on bars: names, specs and how a tally becomes `AssetCheckResult`s.

Every check passes when its count is at most its threshold (0): rows the validation put in
quarantine count against the check of their category, so bad data blocks downstream assets
even though the dataset itself only ever holds good rows. Each result carries ``actual`` and
``threshold`` in its metadata, plus up to ten examples.

| check                   | counts                                                         |
|-------------------------|----------------------------------------------------------------|
| `bars_schema`           | stored files not in `BAR_SCHEMA` + rows with nulls or a wrong   |
|                         | symbol                                                         |
| `timestamps_monotonic`  | stored rows whose ts is not after the previous row's           |
| `ohlc_consistent`       | rows with a non-positive price, low/high not bracketing open    |
|                         | and close, or negative volume                                  |
| `no_duplicate_bars`     | extra rows for one (symbol, ts)                                 |
| `no_session_gaps`       | sessions without a bar, and bars dated off-session              |
| `no_quarantined_rows`   | (scenario windows only) any quarantined row in the window       |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

import dagster as dg
import pyarrow as pa

from virtufin.marketdata import (
    count_by_category,
    count_duplicates,
    count_non_monotonic,
    count_ohlc_violations,
    schema_differences,
)

__all__ = [
    "BAR_CHECKS",
    "CHECK_DUPLICATES",
    "CHECK_GAPS",
    "CHECK_MONOTONIC",
    "CHECK_OHLC",
    "CHECK_QUARANTINE",
    "CHECK_SCHEMA",
    "QualityTally",
    "bar_check_specs",
]

CHECK_SCHEMA: Final = "bars_schema"
CHECK_MONOTONIC: Final = "timestamps_monotonic"
CHECK_OHLC: Final = "ohlc_consistent"
CHECK_DUPLICATES: Final = "no_duplicate_bars"
CHECK_GAPS: Final = "no_session_gaps"
CHECK_QUARANTINE: Final = "no_quarantined_rows"
BAR_CHECKS: Final = (CHECK_SCHEMA, CHECK_MONOTONIC, CHECK_OHLC, CHECK_DUPLICATES, CHECK_GAPS)
_CATEGORY_CHECK: Final = {
    "schema": CHECK_SCHEMA,
    "monotonic": CHECK_MONOTONIC,
    "ohlc": CHECK_OHLC,
    "duplicates": CHECK_DUPLICATES,
    "gaps": CHECK_GAPS,
}
_DESCRIPTIONS: Final = {
    CHECK_SCHEMA: "Stored files have the bar schema; no row had nulls or a foreign symbol.",
    CHECK_MONOTONIC: "Timestamps strictly increase within each symbol.",
    CHECK_OHLC: "Prices are positive, low ≤ open/close ≤ high, volume is not negative.",
    CHECK_DUPLICATES: "At most one bar per (symbol, ts).",
    CHECK_GAPS: "Every session of the calendar has a bar and no bar is dated off-session.",
    CHECK_QUARANTINE: "No row of the window is in quarantine.",
}
_EXAMPLES: Final = 10


def bar_check_specs(asset: str, *, quarantine: bool = False) -> list[dg.AssetCheckSpec]:
    """The blocking data-quality check specs of a bar asset."""
    names = (*BAR_CHECKS, CHECK_QUARANTINE) if quarantine else BAR_CHECKS
    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=True, description=_DESCRIPTIONS[name])
        for name in names
    ]


@dataclass
class QualityTally:
    """Counts gathered while ingesting or inspecting bars, turned into check results."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_DESCRIPTIONS, 0))
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, check: str, count: int, *examples: str) -> None:
        if count <= 0:
            return
        self.counts[check] += count
        kept = self.examples.setdefault(check, [])
        kept.extend(examples[: max(0, _EXAMPLES - len(kept))])

    def add_stored(self, table: pa.Table, where: str) -> None:
        """Measure stored rows (after writing): schema, order, OHLC, duplicates."""
        problems = schema_differences(table.schema)
        self.add(CHECK_SCHEMA, len(problems), *(f"{where}: {p}" for p in problems))
        if problems:
            return
        self.add(CHECK_MONOTONIC, count_non_monotonic(table), where)
        self.add(CHECK_OHLC, count_ohlc_violations(table), where)
        self.add(CHECK_DUPLICATES, count_duplicates(table), where)

    def add_quarantined(self, rejected: pa.Table, where: str, *, window: bool = False) -> None:
        """Quarantined rows count against their category's check (and the window's)."""
        if rejected.num_rows == 0:
            return
        reasons = rejected.column("reason").to_pylist()
        for category, count in count_by_category(rejected).items():
            if count:
                examples = [f"{where}: {r}" for r in reasons if r][:_EXAMPLES]
                self.add(_CATEGORY_CHECK[category], count, *examples)
        if window:
            self.add(CHECK_QUARANTINE, rejected.num_rows, f"{where}: {rejected.num_rows} rows")

    def add_gaps(self, missing: Sequence[tuple[str, date]]) -> None:
        self.add(CHECK_GAPS, len(missing), *(f"{s} {d.isoformat()}: no bar" for s, d in missing))

    @property
    def failed(self) -> list[str]:
        return [name for name, count in self.counts.items() if count > 0]

    def results(self, asset: str, *, quarantine: bool = False) -> list[dg.AssetCheckResult]:
        """One result per check of `bar_check_specs` (actual vs threshold 0)."""
        names = (*BAR_CHECKS, CHECK_QUARANTINE) if quarantine else BAR_CHECKS
        out = []
        for name in names:
            actual = self.counts[name]
            metadata: dict[str, Any] = {"actual": actual, "threshold": 0}
            if self.examples.get(name):
                metadata["examples"] = dg.MetadataValue.md(
                    "\n".join(f"- {e}" for e in self.examples[name])
                )
            out.append(
                dg.AssetCheckResult(
                    asset_key=asset,
                    check_name=name,
                    passed=actual == 0,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata=metadata,
                    description=_DESCRIPTIONS[name],
                )
            )
        return out
