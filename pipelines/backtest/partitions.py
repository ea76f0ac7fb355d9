"""Backtest partitions: one per registered backtest scenario (dynamic)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import dagster as dg

__all__ = ["SCENARIO_PARTITIONS", "add_scenario_partitions", "scenario_partitions"]

SCENARIO_PARTITIONS: Final = "backtest_scenarios"
scenario_partitions: Final = dg.DynamicPartitionsDefinition(name=SCENARIO_PARTITIONS)


def add_scenario_partitions(instance: dg.DagsterInstance, scenario_ids: Sequence[str]) -> list[str]:
    """Add the ids that are not partitions yet; return those added."""
    existing = set(instance.get_dynamic_partitions(SCENARIO_PARTITIONS))
    new = [sid for sid in dict.fromkeys(scenario_ids) if sid not in existing]
    if new:
        instance.add_dynamic_partitions(SCENARIO_PARTITIONS, new)
    return new
