"""The Virtufin worker DevKit: what a worker author imports.

Two shapes of worker:

- a class (``application/x-python-class``, runs in the host process): subclass `Worker`,
  implement ``on_event(event)`` and emit through ``self.ctx`` (a `WorkerContext`);
  `CommandWorker` adds Virtufin's command/reply wire format;
- a script (``text/x-python``, runs in a sandboxed child process): a module with
  ``def Process(event: dict) -> dict | None`` (see `workers.kit.script`).

Order ids come from ``self.ctx.order_id()``: derived from the input being handled, so a
redelivered input re-emits the same orders and a restarted worker never reuses an id
(`workers.kit.ids`). A worker that overrides ``snapshot``/``restore`` keeps its state across
restarts when hosted live (`workers.kit.snapshots`).

Parameters are declared as a JSON Schema subset in the worker's manifest and checked by
`validate_params` before the worker starts. Test a worker with ``virtufin worker test``.

Example:
    >>> from workers.kit import Worker, WorkerContext
    >>> class Count(Worker):
    ...     def on_event(self, event):
    ...         self.ctx.emit("com.example.count", {"type": event.type})
"""

from workers.kit.clock import Clock, HistoricalClock, WallClock
from workers.kit.commands import (
    COMMAND_REPLY_TYPE,
    MISSING_COMMAND,
    PARSE_FAILED,
    CommandReply,
    CommandWorker,
    parse_command,
    unknown_command,
)
from workers.kit.context import SCENARIO_TYPE_PREFIXES, Emission, WorkerContext
from workers.kit.ids import order_id
from workers.kit.params import check_schema, validate_params
from workers.kit.script import ProcessFunction, ScriptWorker, emissions_from_output, load_process
from workers.kit.snapshots import SnapshotKeeper, fingerprint
from workers.kit.worker import Worker

__all__ = [
    "COMMAND_REPLY_TYPE",
    "MISSING_COMMAND",
    "PARSE_FAILED",
    "SCENARIO_TYPE_PREFIXES",
    "Clock",
    "CommandReply",
    "CommandWorker",
    "Emission",
    "HistoricalClock",
    "ProcessFunction",
    "ScriptWorker",
    "SnapshotKeeper",
    "WallClock",
    "Worker",
    "WorkerContext",
    "check_schema",
    "emissions_from_output",
    "fingerprint",
    "load_process",
    "order_id",
    "parse_command",
    "unknown_command",
    "validate_params",
]
