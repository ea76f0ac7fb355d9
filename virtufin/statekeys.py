"""State keys (docs/spec/state-keys.md): the one place key strings are built.

Keys mirror the topic taxonomy, so ``sc.<id>.`` prefixes both the topics and the state of a
scenario, and deleting a scenario can find every key it owns by prefix.

Example:
    >>> order("S7F3A9B", "o-1")
    'sc.S7F3A9B.trading.order.o-1'
"""

from __future__ import annotations

from typing import Final

from virtufin.lanes import validate_id

__all__ = [
    "PROMOTION_LOG_PREFIX",
    "SCENARIO_INDEX",
    "WORKER_INDEX",
    "WORKER_RECOVERY_LEADER",
    "WORKER_SNAPSHOT_PREFIX",
    "order",
    "portfolio",
    "position",
    "promotion_entry",
    "scenario",
    "scenario_prefix",
    "trade",
    "worker",
    "worker_snapshot",
]

SCENARIO_INDEX: Final = "scenario.index"
WORKER_INDEX: Final = "workmanager.worker.index"
WORKER_RECOVERY_LEADER: Final = "workmanager.recovery.leader"
WORKER_SNAPSHOT_PREFIX: Final = "workmanager.snapshot."
PROMOTION_LOG_PREFIX: Final = "promotion.log."


def scenario(scenario_id: str) -> str:
    """The registry entry of a scenario: ``scenario.<id>``."""
    return f"scenario.{validate_id(scenario_id)}"


def scenario_prefix(scenario_id: str) -> str:
    """The prefix of every state key a scenario owns: ``sc.<id>.``."""
    return f"sc.{validate_id(scenario_id)}."


def order(scenario_id: str, order_id: str) -> str:
    """``sc.<sid>.trading.order.<id>``."""
    return f"{scenario_prefix(scenario_id)}trading.order.{order_id}"


def trade(scenario_id: str, trade_id: str) -> str:
    """``sc.<sid>.trading.trade.<id>``."""
    return f"{scenario_prefix(scenario_id)}trading.trade.{trade_id}"


def position(scenario_id: str, symbol: str) -> str:
    """``sc.<sid>.position.<symbol>``."""
    return f"{scenario_prefix(scenario_id)}position.{symbol}"


def portfolio(scenario_id: str) -> str:
    """``sc.<sid>.position.portfolio``."""
    return f"{scenario_prefix(scenario_id)}position.portfolio"


def worker(worker_id: str) -> str:
    """``workmanager.worker.<id>``."""
    return f"workmanager.worker.{worker_id}"


def worker_snapshot(worker_id: str) -> str:
    """``workmanager.snapshot.<id>``: the worker's last state snapshot (outside the records'
    ``workmanager.worker.`` prefix, so that listing or watching records never meets it)."""
    return f"{WORKER_SNAPSHOT_PREFIX}{worker_id}"


def promotion_entry(sequence: int) -> str:
    """``promotion.log.<000000sequence>``: zero-padded so keys sort in log order."""
    if sequence < 0:
        raise ValueError("promotion log sequence numbers start at 0")
    return f"{PROMOTION_LOG_PREFIX}{sequence:09d}"
