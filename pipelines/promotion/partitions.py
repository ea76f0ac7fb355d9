"""Promotion runs per backtest scenario: the ladder uses the backtest domain's partitions."""

from __future__ import annotations

from pipelines.backtest.partitions import SCENARIO_PARTITIONS, scenario_partitions

__all__ = ["SCENARIO_PARTITIONS", "scenario_partitions"]
