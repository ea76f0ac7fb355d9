"""The row every benchmark suite returns: a figure beside its same-run baseline."""

from __future__ import annotations

from typing import Any

__all__ = ["bench_row"]


def bench_row(
    name: str, value: float, unit: str, baseline_name: str, baseline: float, target: str
) -> dict[str, Any]:
    """`{"name","value","unit","baseline_name","baseline_value","ratio","target"}`."""
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "baseline_name": baseline_name,
        "baseline_value": baseline,
        "ratio": value / baseline if baseline else float("nan"),
        "target": target,
    }
