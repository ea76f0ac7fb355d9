"""Virtufin's worker frames: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.

Frame objects carry ``type`` (``ready``, ``process``, ``result``, ``ping``, ``pong``,
``shutdown``, ``error``), ``cloudEvent`` (input of ``process``, optional output of
``result``) and ``error``. This project adds batches: ``process`` with ``cloudEvents`` (a list)
answered by ``result`` with ``results`` (one ``{cloudEvent?}``/``{cloudEvents}``/``{error}``
per input), and ``cloudEvents`` on a ``result`` for several outputs, and state snapshots of
stateful scripts: ``snapshot`` answered by ``result`` with ``state``, ``restore`` (with
``state``) answered by ``result``; such a child's ``ready`` carries ``"stateful": true``. See
docs/spec/worker-protocol.md. The child side (`virtufin/runtime/child.py`) mirrors this code
with the standard library only.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from typing import Final

__all__ = [
    "BATCH_PREFIX",
    "FRAME_ERROR",
    "FRAME_PING",
    "FRAME_PONG",
    "FRAME_PROCESS",
    "FRAME_READY",
    "FRAME_RESTORE",
    "FRAME_RESULT",
    "FRAME_SHUTDOWN",
    "FRAME_SNAPSHOT",
    "HEADER",
    "MAX_FRAME_BYTES",
    "PING",
    "PROCESS_PREFIX",
    "SHUTDOWN",
    "SNAPSHOT",
    "ChannelClosed",
    "FrameChannel",
    "FrameTimeout",
    "ProtocolError",
    "pack",
]

HEADER: Final = struct.Struct(">I")
MAX_FRAME_BYTES: Final = 64 * 1024 * 1024

FRAME_READY: Final = "ready"
FRAME_PROCESS: Final = "process"
FRAME_RESULT: Final = "result"
FRAME_PING: Final = "ping"
FRAME_PONG: Final = "pong"
FRAME_SHUTDOWN: Final = "shutdown"
FRAME_ERROR: Final = "error"
FRAME_SNAPSHOT: Final = "snapshot"
FRAME_RESTORE: Final = "restore"

PROCESS_PREFIX: Final = b'{"type":"process","cloudEvent":'
"""A process frame is this, the event's JSON, and ``}``: the event is never re-encoded."""
BATCH_PREFIX: Final = b'{"type":"process","cloudEvents":['


def pack(body: bytes) -> bytes:
    """Header plus body."""
    return HEADER.pack(len(body)) + body


PING: Final = pack(b'{"type":"ping"}')
SHUTDOWN: Final = pack(b'{"type":"shutdown"}')
SNAPSHOT: Final = pack(b'{"type":"snapshot"}')


class ChannelClosed(ConnectionError):
    """The peer closed the socket (a child that exited or crashed)."""


class FrameTimeout(TimeoutError):
    """No complete frame arrived before the deadline."""


class ProtocolError(ValueError):
    """The peer sent something that is not a frame."""


class FrameChannel:
    """Frames over one connected stream socket, with a reusable receive buffer."""

    def __init__(self, sock: socket.socket, *, buffer_bytes: int = 1 << 16) -> None:
        self.sock = sock
        self._buf = bytearray(buffer_bytes)
        self._start = 0
        self._end = 0

    def send(self, frame: bytes, timeout: float | None = None) -> None:
        """Send an already packed frame (`pack`).

        Raises:
            FrameTimeout: the peer did not take it within `timeout` seconds.
            ChannelClosed: the peer closed the connection.
        """
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(frame)
        except TimeoutError:
            raise FrameTimeout(f"could not send a frame within {timeout} s") from None
        except OSError as exc:
            raise ChannelClosed(str(exc)) from None

    def _frame_ready(self) -> bytes | None:
        avail = self._end - self._start
        if avail < 4:
            return None
        (size,) = HEADER.unpack_from(self._buf, self._start)
        if size > MAX_FRAME_BYTES:
            raise ProtocolError(f"frame of {size} B exceeds {MAX_FRAME_BYTES} B")
        if avail < 4 + size:
            return None
        begin = self._start + 4
        body = bytes(self._buf[begin : begin + size])
        self._start = begin + size
        if self._start == self._end:
            self._start = self._end = 0
        return body

    def _reserve(self) -> None:
        """Make room for the rest of the frame being received."""
        avail = self._end - self._start
        needed = 4 + HEADER.unpack_from(self._buf, self._start)[0] if avail >= 4 else 4
        if self._start + needed > len(self._buf):
            self._buf[:avail] = self._buf[self._start : self._end]
            self._start, self._end = 0, avail
        if needed > len(self._buf):
            self._buf.extend(bytes(needed - len(self._buf)))

    def recv(self, timeout: float | None) -> bytes:
        """The next frame's body.

        Raises:
            FrameTimeout: nothing complete within `timeout` seconds.
            ChannelClosed: the peer closed the connection.
            ProtocolError: an oversized frame.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            body = self._frame_ready()
            if body is not None:
                return body
            self._reserve()
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FrameTimeout(f"no frame within {timeout} s")
                self.sock.settimeout(remaining)
            else:
                self.sock.settimeout(None)
            try:
                with memoryview(self._buf) as view:
                    got = self.sock.recv_into(view[self._end :])
            except TimeoutError:
                raise FrameTimeout(f"no frame within {timeout} s") from None
            except OSError as exc:
                raise ChannelClosed(str(exc)) from None
            if got == 0:
                raise ChannelClosed("peer closed the connection")
            self._end += got

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
