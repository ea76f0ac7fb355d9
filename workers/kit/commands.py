"""Command workers: Virtufin's ``{"command": ...}`` request / ``{command, success, id?, message?}``
reply wire format.

A command arrives as the event's ``data``: a JSON object, or JSON text (string or bytes). The
command name is matched case-insensitively against an `Enum`'s values (and names). Malformed
requests get exactly Virtufin's error replies, ``{"command": "error", "success": false,
"message": …}`` with one of:

- ``Failed to parse command JSON`` — data is not JSON text or not a JSON object;
- ``Missing 'command' field`` — no (or a null) ``command``;
- ``Unknown command: <name>`` — not one of the enum's commands.

A handler that raises answers ``{"command": <name>, "success": false, "message": "<error>"}``.
The reply goes to the request's ``replytopic`` (else the worker's output topic), with the
request's ``correlationid`` copied by the host.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Final, Generic, TypeVar

from virtufin.envelope import Envelope
from virtufin.topics import EventTypes
from workers.kit.worker import Worker

__all__ = [
    "COMMAND_REPLY_TYPE",
    "MISSING_COMMAND",
    "PARSE_FAILED",
    "CommandReply",
    "CommandWorker",
    "parse_command",
    "unknown_command",
]

COMMAND_REPLY_TYPE: Final = EventTypes.service("worker", "command", "reply")
PARSE_FAILED: Final = "Failed to parse command JSON"
MISSING_COMMAND: Final = "Missing 'command' field"

E = TypeVar("E", bound=Enum)


def unknown_command(name: object) -> str:
    """``Unknown command: <name>``."""
    return f"Unknown command: {name}"


@dataclass(frozen=True, slots=True)
class CommandReply:
    """One reply; `to_dict` leaves out `id` and `message` when they are None."""

    command: str
    success: bool
    id: str | None = None
    message: str | None = None

    @classmethod
    def ok(cls, command: Enum | str, message: str | None = None) -> CommandReply:
        """A success reply for `command`."""
        name = command.value if isinstance(command, Enum) else command
        return cls(str(name), True, message=message)

    @classmethod
    def error(cls, message: str, *, id: str | None = None) -> CommandReply:
        """Virtufin's error reply: ``{"command": "error", "success": false, "message": …}``."""
        return cls("error", False, id=id, message=message)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"command": self.command, "success": self.success}
        if self.id is not None:
            out["id"] = self.id
        if self.message is not None:
            out["message"] = self.message
        return out


def _lookup(commands: type[E], name: str) -> E | None:
    folded = name.casefold()
    for member in commands:
        if str(member.value).casefold() == folded or member.name.casefold() == folded:
            return member
    return None


def parse_command(data: Any, commands: type[E]) -> tuple[E, dict[str, Any]] | CommandReply:
    """Read a command request; return ``(command, request object)`` or the error reply.

    Example:
        >>> class Cmd(Enum):
        ...     PING = "ping"
        >>> parse_command('{"command": "PING"}', Cmd)[0]
        <Cmd.PING: 'ping'>
        >>> parse_command({"command": "x"}, Cmd).to_dict()
        {'command': 'error', 'success': False, 'message': 'Unknown command: x'}
    """
    obj: Any = data
    if isinstance(data, str | bytes | bytearray):
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return CommandReply.error(PARSE_FAILED)
    if not isinstance(obj, Mapping):
        return CommandReply.error(PARSE_FAILED)
    raw_id = obj.get("id")
    request_id = None if raw_id is None else str(raw_id)
    name = obj.get("command")
    if name is None:
        return CommandReply.error(MISSING_COMMAND, id=request_id)
    member = _lookup(commands, name) if isinstance(name, str) else None
    if member is None:
        return CommandReply.error(unknown_command(name), id=request_id)
    return member, dict(obj)


class CommandWorker(Worker, Generic[E]):
    """A worker that answers commands.

    | member       | required | notes                                                    |
    |--------------|----------|----------------------------------------------------------|
    | commands     | yes      | the `Enum` of accepted commands (values are wire names)  |
    | handle       | yes      | ``(command, request) -> CommandReply | None``            |
    | reply_type   | no       | CloudEvents type of replies (``…worker.command.reply``)  |

    The request's ``id`` is copied into the reply when `handle` leaves it unset; returning
    None sends no reply.
    """

    commands: type[E]
    reply_type: str = COMMAND_REPLY_TYPE

    def handle(self, command: E, request: dict[str, Any]) -> CommandReply | None:
        """Execute `command`; `request` is the whole request object."""
        raise NotImplementedError(f"{type(self).__name__}.handle")

    def on_event(self, event: Envelope) -> None:
        parsed = parse_command(event.data, self.commands)
        if isinstance(parsed, CommandReply):
            reply: CommandReply | None = parsed
        else:
            command, request = parsed
            request_id = None if request.get("id") is None else str(request["id"])
            try:
                reply = self.handle(command, request)
            except Exception as exc:
                reply = CommandReply(str(command.value), False, message=f"{exc}")
            if reply is not None and reply.id is None and request_id is not None:
                reply = replace(reply, id=request_id)
        if reply is not None:
            self.ctx.emit(self.reply_type, reply.to_dict())
