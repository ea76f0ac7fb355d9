"""The promotion gates: four blocking checks per ladder step, thresholds from the scenario.

| check                   | passes when                                                      |
|-------------------------|------------------------------------------------------------------|
| `min_sharpe`            | Sharpe ≥ ``gates.<step>.min_sharpe``                             |
| `max_drawdown`          | max drawdown (positive %) ≤ ``gates.<step>.max_drawdown_pct``    |
| `min_trades`            | closed trades ≥ ``gates.<step>.min_trades``                      |
| `no_regression_vs_live` | Sharpe ≥ the LIVE version's Sharpe on the same data −            |
|                         | ``gates.<step>.max_sharpe_regression`` (passes if nothing is LIVE)|

Each result's metadata has ``actual``, ``threshold`` and ``margin`` (how far past or short of
the threshold), which the promotion log entry repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import dagster as dg

from pipelines.backtest.runner import GateMetrics
from pipelines.backtest.specs import GateThresholds

__all__ = [
    "CHECK_MAX_DRAWDOWN",
    "CHECK_MIN_SHARPE",
    "CHECK_MIN_TRADES",
    "CHECK_NO_REGRESSION",
    "GATE_CHECKS",
    "Gate",
    "evaluate_gates",
    "gate_check_specs",
]

CHECK_MIN_SHARPE: Final = "min_sharpe"
CHECK_MAX_DRAWDOWN: Final = "max_drawdown"
CHECK_MIN_TRADES: Final = "min_trades"
CHECK_NO_REGRESSION: Final = "no_regression_vs_live"
GATE_CHECKS: Final = (CHECK_MIN_SHARPE, CHECK_MAX_DRAWDOWN, CHECK_MIN_TRADES, CHECK_NO_REGRESSION)
_DESCRIPTIONS: Final = {
    CHECK_MIN_SHARPE: "Sharpe ratio at least the scenario's minimum.",
    CHECK_MAX_DRAWDOWN: "Max drawdown at most the scenario's maximum.",
    CHECK_MIN_TRADES: "At least the scenario's minimum number of closed trades.",
    CHECK_NO_REGRESSION: "Sharpe no worse than the LIVE version's on the same data.",
}


@dataclass(frozen=True, slots=True)
class Gate:
    """One gate's outcome: actual vs threshold."""

    name: str
    passed: bool
    actual: float | None
    threshold: float | None
    note: str = ""

    @property
    def margin(self) -> float | None:
        """actual − threshold for "at least" gates, threshold − actual for "at most" ones."""
        if self.actual is None or self.threshold is None:
            return None
        if self.name == CHECK_MAX_DRAWDOWN:
            return self.threshold - self.actual
        return self.actual - self.threshold

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "passed": self.passed,
            "actual": self.actual,
            "threshold": self.threshold,
        }
        if self.note:
            out["note"] = self.note
        return out

    def result(self, asset: str) -> dg.AssetCheckResult:
        metadata: dict[str, Any] = {
            "actual": _meta(self.actual),
            "threshold": _meta(self.threshold),
        }
        if self.margin is not None:
            metadata["margin"] = self.margin
        if self.note:
            metadata["note"] = self.note
        return dg.AssetCheckResult(
            asset_key=asset,
            check_name=self.name,
            passed=self.passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=metadata,
            description=_DESCRIPTIONS[self.name],
        )


def _meta(value: float | None) -> Any:
    return dg.MetadataValue.text("n/a") if value is None else float(value)


def gate_check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    """The four blocking gate checks of a ladder step's asset."""
    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=True, description=_DESCRIPTIONS[name])
        for name in GATE_CHECKS
    ]


def evaluate_gates(
    candidate: GateMetrics, baseline: GateMetrics | None, thresholds: GateThresholds
) -> list[Gate]:
    """The four gates of a step (`baseline`: the LIVE version on the same data, if any)."""
    sharpe = candidate.sharpe
    drawdown = candidate.max_drawdown_pct
    gates = [
        Gate(
            CHECK_MIN_SHARPE,
            sharpe is not None and sharpe >= thresholds.min_sharpe,
            sharpe,
            thresholds.min_sharpe,
            "" if sharpe is not None else "no Sharpe ratio (no returns)",
        ),
        Gate(
            CHECK_MAX_DRAWDOWN,
            drawdown is not None and drawdown <= thresholds.max_drawdown_pct,
            drawdown,
            thresholds.max_drawdown_pct,
        ),
        Gate(
            CHECK_MIN_TRADES,
            candidate.trades >= thresholds.min_trades,
            float(candidate.trades),
            float(thresholds.min_trades),
        ),
    ]
    if baseline is None:
        gates.append(Gate(CHECK_NO_REGRESSION, True, sharpe, None, "no LIVE version to compare"))
    elif baseline.sharpe is None:
        gates.append(Gate(CHECK_NO_REGRESSION, True, sharpe, None, "LIVE version has no Sharpe"))
    else:
        floor = baseline.sharpe - thresholds.max_sharpe_regression
        gates.append(
            Gate(
                CHECK_NO_REGRESSION,
                sharpe is not None and sharpe >= floor,
                sharpe,
                floor,
                f"LIVE version's Sharpe {baseline.sharpe:.4f}",
            )
        )
    return gates
