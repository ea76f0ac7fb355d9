"""The child side of the out-of-process engines; run as a script, never imported by the host.

``python -E -s child.py --socket <path> --code <script.py> [--blocked m1,m2]`` hosts a
``text/x-python`` script; ``… --native <lib.so> --root <project dir>`` hosts a native library
(safe mode). The child connects to the host's Unix socket, loads the worker, sends ``ready``
(or ``error`` and exits), then answers frames until ``shutdown``. It uses the standard library
only (plus cffi in native mode), so it mirrors `virtufin.runtime.frames` instead of importing
it. Parameters arrive in the environment (``VIRTUFIN_WORKER_ID``, ``VIRTUFIN_WORKER_PARAMS``).

A script defining both ``Snapshot()`` (its state as a JSON value) and ``Restore(state)`` is
stateful: ``ready`` says ``"stateful": true`` and its ``STATE_VERSION`` (default 1), and the
child answers ``snapshot`` with ``{"type":"result","state":…}`` and ``restore`` (with
``state``) with ``{"type":"result"}``.

Blocked modules: after the child's own imports, every module on the block list (and its
``_``-prefixed C twin, e.g. ``_socket``) is dropped from ``sys.modules`` and a meta-path hook
refuses to import it again, directly or through another module. This keeps honest scripts
honest; it is not a security boundary (docs/spec/worker-protocol.md, "Sandbox").
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import os
import socket
import struct
import sys
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

_HEADER = struct.Struct(">I")
_PROCESS_PREFIX = b'{"type":"process","cloudEvent":'
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
Handler = Callable[[bytes, Any], tuple[bool, bytes]]
"""(raw event JSON or b"", parsed event or None) -> (ok, frame members).

Members are ``"cloudEvent":{…}``, ``"cloudEvents":[…]`` or nothing when ok, else ``"error":"…"``.
"""


class _Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def send(self, body: bytes) -> None:
        self.sock.sendall(_HEADER.pack(len(body)) + body)

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> bytes:
        (size,) = _HEADER.unpack(self._read(4))
        return self._read(size)


class _Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, blocked: frozenset[str]) -> None:
        self.blocked = blocked

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0].lstrip("_") in self.blocked:
            raise ImportError(f"import of {fullname!r} is blocked in this worker", name=fullname)
        return None


def block_modules(names: Sequence[str]) -> None:
    """Drop the blocked modules from ``sys.modules`` and refuse to import them again."""
    blocked = frozenset(n.strip().lstrip("_") for n in names if n.strip())
    if not blocked:
        return
    for name in list(sys.modules):
        if name.split(".")[0].lstrip("_") in blocked:
            del sys.modules[name]
    sys.meta_path.insert(0, _Blocker(blocked))


def _error(message: str) -> tuple[bool, bytes]:
    return False, b'"error":' + _dumps(message).encode()


def _exception(exc: BaseException, where: str) -> tuple[bool, bytes]:
    traceback.print_exception(exc, file=sys.stderr)
    return _error(f"{where}: {type(exc).__name__}: {exc}")


def _members_of(output: Any) -> tuple[bool, bytes]:
    if output is None:
        return True, b""
    if isinstance(output, dict):
        return True, b'"cloudEvent":' + _dumps(output).encode()
    if isinstance(output, list | tuple):
        return True, b'"cloudEvents":' + _dumps(list(output)).encode()
    raise TypeError(
        f"Process returned {type(output).__name__}; expected a dict {{type, source, data}}, "
        "a list of them, or None"
    )


def _frame(ok: bool, members: bytes) -> bytes:
    if not ok:
        return b'{"type":"error",' + members + b"}"
    return b'{"type":"result",' + members + b"}" if members else b'{"type":"result"}'


class StateHooks:
    """A stateful script's ``Snapshot`` and ``Restore``, and its ``STATE_VERSION``."""

    def __init__(self, module: ModuleType) -> None:
        self.snapshot: Callable[[], Any] = module.__dict__["Snapshot"]
        self.restore: Callable[[Any], Any] = module.__dict__["Restore"]
        version = module.__dict__.get("STATE_VERSION", 1)
        self.version = version if isinstance(version, int) else 1

    @staticmethod
    def of(module: ModuleType) -> StateHooks | None:
        found = module.__dict__
        if callable(found.get("Snapshot")) and callable(found.get("Restore")):
            return StateHooks(module)
        return None

    def ready(self) -> bytes:
        return b'{"type":"ready","stateful":true,"stateVersion":%d}' % self.version

    def answer(self, frame: dict[str, Any]) -> bytes:
        """The reply to a ``snapshot`` or ``restore`` frame."""
        kind = frame.get("type")
        try:
            if kind == "snapshot":
                return b'{"type":"result","state":' + _dumps(self.snapshot()).encode() + b"}"
            self.restore(frame.get("state"))
            return b'{"type":"result"}'
        except Exception as exc:
            name = "Snapshot" if kind == "snapshot" else "Restore"
            return _frame(*_exception(exc, f"{name} raised"))


def load_script(code: str) -> Handler:
    """Execute the script as module ``__worker__`` and wrap its ``Process(event)``."""
    directory = os.path.dirname(os.path.abspath(code))
    sys.path[0] = directory
    module = ModuleType("__worker__")
    module.__file__ = code
    sys.modules["__worker__"] = module
    with open(code, encoding="utf-8") as source_file:
        source = source_file.read()
    exec(compile(source, code, "exec"), module.__dict__)
    process = module.__dict__.get("Process")
    if not callable(process):
        raise AttributeError(f"{code} defines no function Process(event)")

    def handle(raw: bytes, event: Any) -> tuple[bool, bytes]:
        if event is None:
            event = json.loads(raw)
        try:
            output = process(event)
        except Exception as exc:
            return _exception(exc, "Process raised")
        try:
            return _members_of(output)
        except (TypeError, ValueError) as exc:
            return _exception(exc, "Process returned garbage")

    return handle


def load_native(library: str, root: str) -> tuple[Handler, Callable[[], None]]:
    """Load a native worker through the host's own cffi binding, then call ``Configure``."""
    sys.path.insert(0, root)
    from virtufin.runtime.native_lib import NativeCallError, NativeLibrary

    class ChildLibrary(NativeLibrary):
        bridge: Any = None

        def log(self, level: int, message: str) -> None:
            super().log(level, message)
            sys.stderr.write(f"native log level {level}: {message}\n")
            sys.stderr.flush()

        def gateway_call(self, service: str, method: str, request: bytes) -> bytes:
            if self.bridge is None:
                if not os.environ.get("VIRTUFIN_GATEWAY_TARGET"):
                    raise NotImplementedError("no gateway")
                from virtufin.client._bridge import GatewayBridge

                self.bridge = GatewayBridge.from_env(os.environ)
            result: bytes = self.bridge(service, method, request)
            return result

    lib = ChildLibrary(library, worker_id=os.environ.get("VIRTUFIN_WORKER_ID", ""))
    config = os.environ.get("VIRTUFIN_NATIVE_CONFIG", "{}").encode("utf-8")
    lib.configure(config)

    def handle(raw: bytes, event: Any) -> tuple[bool, bytes]:
        if not raw:
            raw = _dumps(event).encode("utf-8")
        try:
            out = lib.process(raw)
        except NativeCallError as exc:
            return _error(exc.reason)
        if out is None:
            return True, b""
        try:
            parsed = json.loads(out)
        except ValueError as exc:
            return _error(f"Process output is not JSON: {exc}")
        if isinstance(parsed, dict):
            return True, b'"cloudEvent":' + out
        if isinstance(parsed, list):
            return True, b'"cloudEvents":' + out
        return _error(f"Process output is a JSON {type(parsed).__name__}, not an object")

    return handle, lib.close


def _batch(handler: Handler, events: list[Any]) -> bytes:
    items = []
    for event in events:
        _, members = handler(b"", event)
        items.append(b"{" + members + b"}")
    return b'{"type":"result","results":[' + b",".join(items) + b"]}"


def serve(channel: _Channel, handler: Handler, state: StateHooks | None = None) -> None:
    """Answer frames until ``shutdown`` or the host goes away."""
    prefix_len = len(_PROCESS_PREFIX)
    while True:
        try:
            body = channel.recv()
        except (EOFError, OSError):
            return
        if body.startswith(_PROCESS_PREFIX):
            channel.send(_frame(*handler(body[prefix_len:-1], None)))
            continue
        frame = json.loads(body)
        kind = frame.get("type")
        if kind == "process" and "cloudEvents" in frame:
            channel.send(_batch(handler, frame["cloudEvents"]))
        elif kind == "process":
            channel.send(_frame(*handler(b"", frame.get("cloudEvent"))))
        elif kind == "ping":
            channel.send(b'{"type":"pong"}')
        elif kind in ("snapshot", "restore") and state is not None:
            channel.send(state.answer(frame))
        elif kind == "shutdown":
            return
        else:
            channel.send(_frame(*_error(f"unknown frame {kind!r}")))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="virtufin-worker-child")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--code")
    parser.add_argument("--native")
    parser.add_argument("--root", default="")
    parser.add_argument("--blocked", default="")
    args = parser.parse_args(argv)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(args.socket)
    channel = _Channel(sock)
    close: Callable[[], None] = lambda: None  # noqa: E731 - replaced in native mode
    state: StateHooks | None = None
    try:
        if args.native:
            handler, close = load_native(args.native, args.root)
        else:
            block_modules(args.blocked.split(","))
            handler = load_script(args.code)
            state = StateHooks.of(sys.modules["__worker__"])
    except BaseException as exc:
        channel.send(_frame(*_exception(exc, "load failed")))
        sock.close()
        return 1
    channel.send(state.ready() if state is not None else b'{"type":"ready"}')
    try:
        serve(channel, handler, state)
    finally:
        close()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
