"""State stores: the port and its adapters (memory, sqlite, postgres, redis, dapr)."""

from virtufin.state.memory import MemoryStateStore
from virtufin.state.port import StateItem, StateOp, StateStore

__all__ = ["MemoryStateStore", "StateItem", "StateOp", "StateStore"]
