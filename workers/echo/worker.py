"""`EchoWorker`: the smallest useful command worker (Virtufin's command wire format).

Requests ``{"command": "echo", "message": "hi", "id": "1"}`` → reply
``{"command": "echo", "success": true, "id": "1", "message": "hi"}``; ``ping`` → ``pong``;
``status`` → how many commands it has handled.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from workers.kit import CommandReply, CommandWorker, WorkerContext

__all__ = ["EchoCommand", "EchoWorker"]


class EchoCommand(StrEnum):
    """Commands the echo worker accepts (matched case-insensitively)."""

    ECHO = "echo"
    PING = "ping"
    STATUS = "status"


class EchoWorker(CommandWorker[EchoCommand]):
    """Answers every command it understands; counts them."""

    commands = EchoCommand

    def on_start(self, ctx: WorkerContext) -> None:
        self.handled = 0

    def handle(self, command: EchoCommand, request: dict[str, Any]) -> CommandReply | None:
        self.handled += 1
        if command is EchoCommand.ECHO:
            message = request.get("message")
            if message is not None and not isinstance(message, str):
                raise ValueError("message must be a string")
            return CommandReply.ok(command, message)
        if command is EchoCommand.PING:
            return CommandReply.ok(command, "pong")
        return CommandReply.ok(command, f"handled {self.handled} commands")
