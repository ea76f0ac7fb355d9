"""Out-of-process engines: the worker runs in a child process speaking frames over a Unix socket.

`ProcessEngine` owns the child: it binds ``<tmp>/vfw-*/<n>.sock``, starts
``python -E -s child.py --socket <path> …`` (stdout discarded, stderr forwarded to warning
logs), waits for ``ready``, then sends one ``process`` frame per event (or one per batch). A
child that does not answer within ``event_timeout_secs`` is killed; a child that exits or
crashes is noticed by the closed socket. Either way the in-flight event is retried on a fresh
child (after a backoff that doubles per consecutive restart) up to ``max_attempts`` times, then
reported as a `WorkerEventError` for the host to dead-letter. More than ``max_restarts``
restarts within ``restart_window_secs`` fail the engine (`WorkerError`). A background thread
pings an idle child every ``ping_interval_secs`` and restarts it if no ``pong`` comes back.

A restarted child starts with fresh state, unless the script is stateful (it defines
``Snapshot()`` and ``Restore(state)``, see `virtufin.runtime.child`): then the engine gives each
new child the last state it saw, from the last `snapshot` (taken after every input when the
host keeps snapshots) or `restore`. Without snapshots being taken (a backtest), a restarted
child forgets what it had accumulated.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Final

from virtufin.envelope import Envelope
from virtufin.errors import WorkerError, WorkerEventError, WorkerLoadError
from virtufin.runtime.constants import MIME_PYTHON_SCRIPT
from virtufin.runtime.engine import Engine, EngineStatus, RunResult
from virtufin.runtime.frames import (
    BATCH_PREFIX,
    PING,
    PROCESS_PREFIX,
    SHUTDOWN,
    SNAPSHOT,
    ChannelClosed,
    FrameChannel,
    FrameTimeout,
    ProtocolError,
    pack,
)
from virtufin.runtime.wire import event_json
from workers.kit.clock import Clock
from workers.kit.context import Emission
from workers.kit.script import emissions_from_output

__all__ = ["CHILD_SCRIPT", "ProcessEngine", "PythonScriptEngine", "describe_exit"]

CHILD_SCRIPT: Final = str(Path(__file__).with_name("child.py"))
_PASSED_ENV: Final = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "HOME",
    "TMPDIR",
    "LD_LIBRARY_PATH",
)


def describe_exit(returncode: int | None) -> str:
    """``exited with code 3`` / ``killed by SIGSEGV`` / ``still running``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class _Crash(Exception):
    """The child timed out, died or spoke nonsense; `reason` says which."""


class ProcessEngine(Engine):
    """Base class of engines whose worker lives in a child process.

    | hook         | required | notes                                                    |
    |--------------|----------|----------------------------------------------------------|
    | _child_args  | yes      | child arguments after ``--socket <path>``                |
    | _child_env   | no       | extra environment variables for the child                |
    | _precheck    | no       | fail fast in the host before spawning (missing files …)  |
    """

    isolation = "process"
    blocking = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options = self.manifest.options
        self.restarts = 0
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._chan: FrameChannel | None = None
        self._stderr_thread: threading.Thread | None = None
        self._stderr_tail: deque[str] = deque(maxlen=20)
        self._dir: str | None = None
        self._generation = 0
        self._restart_times: deque[float] = deque()
        self._consecutive = 0
        self._died_at = 0.0
        self._last_pong: float | None = None
        self._halt = threading.Event()
        self._pinger: threading.Thread | None = None
        self._stateful = False
        self._state_version = 1
        self._last_state: Any = None
        self._has_state = False

    # ------------------------------------------------------------------ hooks

    def _child_args(self) -> list[str]:
        raise NotImplementedError(f"{type(self).__name__}._child_args")

    def _child_env(self) -> dict[str, str]:
        return {}

    def _precheck(self) -> None:
        """Check what can be checked in the host (no-op by default)."""

    # ------------------------------------------------------------------ child management

    def _environment(self) -> dict[str, str]:
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env.update(self.binding.env)
        env.update(
            VIRTUFIN_WORKER_ID=self.worker_id,
            VIRTUFIN_WORKER_PARAMS=json.dumps(self.params),
            VIRTUFIN_WORKER_TOPIC=",".join(self.manifest.topics),
            VIRTUFIN_WORKER_GROUP=self.manifest.group or "",
        )
        env.update(self._child_env())
        return env

    def _forward_stderr(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                if line:
                    self._stderr_tail.append(line)
                    self.logger.warning("[%s stderr] %s", self.worker_id, line)

    def _spawn(self) -> None:
        assert self._dir is not None
        self._generation += 1
        path = os.path.join(self._dir, f"{self._generation}.sock")
        exe = self.options.python_executable or sys.executable
        argv = [exe, "-E", "-s", CHILD_SCRIPT, "--socket", path, *self._child_args()]
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(1)
            listener.settimeout(0.02)
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=self._environment(),
                    cwd=self._dir,
                )
            except OSError as exc:
                raise WorkerLoadError(self.worker_id, f"cannot start {exe}: {exc}") from None
            assert proc.stderr is not None
            thread = threading.Thread(
                target=self._forward_stderr,
                args=(proc.stderr,),
                name=f"vfw-stderr-{self.worker_id}",
                daemon=True,
            )
            thread.start()
            deadline = time.monotonic() + self.options.start_timeout_secs
            conn = None
            while conn is None:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        why = (
                            describe_exit(proc.poll())
                            if proc.poll() is not None
                            else (f"did not connect within {self.options.start_timeout_secs:g} s")
                        )
                        self._reap(proc, thread)
                        raise WorkerLoadError(
                            self.worker_id, f"worker child {why}{self._tail()}"
                        ) from None
        finally:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
        chan = FrameChannel(conn)
        try:
            reply = json.loads(chan.recv(max(deadline - time.monotonic(), 0.01)))
        except (FrameTimeout, ChannelClosed, ProtocolError, ValueError) as exc:
            chan.close()
            self._reap(proc, thread)
            raise WorkerLoadError(
                self.worker_id, f"worker child never became ready ({exc}){self._tail()}"
            ) from None
        if reply.get("type") != "ready":
            chan.close()
            self._reap(proc, thread)
            raise WorkerLoadError(self.worker_id, str(reply.get("error") or reply))
        self._proc, self._chan, self._stderr_thread = proc, chan, thread
        self._last_pong = time.monotonic()
        self._stateful = reply.get("stateful") is True
        version = reply.get("stateVersion")
        self._state_version = version if isinstance(version, int) else 1

    def _tail(self) -> str:
        return f"; stderr: {self._stderr_tail[-1]}" if self._stderr_tail else ""

    def _reap(self, proc: subprocess.Popen[bytes], thread: threading.Thread | None) -> None:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if thread is not None:
            thread.join(timeout=2)

    def _discard_child(self) -> int | None:
        """Kill and reap the current child; return its exit code."""
        proc, chan, thread = self._proc, self._chan, self._stderr_thread
        self._proc = self._chan = self._stderr_thread = None
        if chan is not None:
            chan.close()
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)  # a crashing child may still be on its way out
        code = proc.poll()
        self._reap(proc, thread)
        return code

    def _crash(self, reason: str) -> str:
        """Forget a broken child; return the reason, completed with its exit status."""
        code = self._discard_child()
        if code is not None and "exited" not in reason and "killed" not in reason:
            reason = f"{reason} (child {describe_exit(code)})"
        reason += self._tail()
        self._stderr_tail.clear()
        self.last_error = reason
        self._died_at = time.monotonic()
        if self.status is EngineStatus.READY:
            self.status = EngineStatus.DEGRADED
        self.logger.warning("worker %s child failed: %s", self.worker_id, reason)
        return reason

    def _ensure_child(self) -> FrameChannel:
        """The live child's channel, restarting a dead child first (with backoff)."""
        if self._chan is not None:
            return self._chan
        if self.status is EngineStatus.FAILED:
            raise WorkerError(self.worker_id, f"worker failed: {self.last_error}")
        now = time.monotonic()
        window = self.options.restart_window_secs
        while self._restart_times and now - self._restart_times[0] > window:
            self._restart_times.popleft()
        if len(self._restart_times) >= self.options.max_restarts:
            self.status = EngineStatus.FAILED
            raise WorkerError(
                self.worker_id,
                f"restarted {len(self._restart_times)} times within {window:g} s; "
                f"giving up (last failure: {self.last_error})",
            )
        delay = min(
            self.options.restart_backoff_secs * (2**self._consecutive),
            self.options.max_backoff_secs,
        )
        wait = self._died_at + delay - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._consecutive += 1
        self._restart_times.append(time.monotonic())
        self.restarts += 1
        try:
            self._spawn()
        except WorkerLoadError as exc:
            self.status = EngineStatus.FAILED
            self.last_error = exc.reason
            raise WorkerError(
                self.worker_id, f"could not restart the child: {exc.reason}"
            ) from None
        assert self._chan is not None
        if self._stateful and self._has_state:
            self._give_state(self._chan)
        return self._chan

    def _give_state(self, chan: FrameChannel) -> None:
        """Hand the last state to a restarted child (a failure fails the engine)."""
        frame = pack(b'{"type":"restore","state":' + json.dumps(self._last_state).encode() + b"}")
        timeout = self.options.event_timeout_secs
        try:
            chan.send(frame, timeout)
            reply = json.loads(chan.recv(timeout))
        except (FrameTimeout, ChannelClosed, ProtocolError, OSError, ValueError) as exc:
            raise _Crash(self._crash(f"restoring the restarted child failed ({exc})")) from None
        if not isinstance(reply, dict) or reply.get("type") != "result":
            self.status = EngineStatus.FAILED
            self.last_error = f"the restarted child refused its state: {reply}"
            raise WorkerError(self.worker_id, self.last_error)

    def _exchange(self, frame: bytes, timeout: float) -> dict[str, Any]:
        """One request/reply on the live child (restarting it first if needed).

        Raises:
            _Crash: the child timed out, died, or answered nonsense (already discarded).
        """
        chan = self._ensure_child()
        try:
            chan.send(frame, timeout)
            body = chan.recv(timeout)
        except FrameTimeout:
            raise _Crash(self._crash(f"timed out after {timeout:g} s")) from None
        except (ChannelClosed, OSError) as exc:
            raise _Crash(self._crash(f"child connection lost ({exc})")) from None
        except ProtocolError as exc:
            raise _Crash(self._crash(f"child sent an invalid frame ({exc})")) from None
        try:
            reply = json.loads(body)
        except ValueError:
            raise _Crash(self._crash("child sent a frame that is not JSON")) from None
        if not isinstance(reply, dict):
            raise _Crash(self._crash("child sent a frame that is not an object"))
        return reply

    def _call(self, frame: bytes, event: Envelope, timeout: float) -> dict[str, Any]:
        """`_exchange` with retries; the reply of a ``result`` frame."""
        reason = ""
        attempts = self.options.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                reply = self._exchange(frame, timeout)
            except _Crash as crash:
                reason = str(crash)
                continue
            self._consecutive = 0
            if self.status is EngineStatus.DEGRADED and self._chan is not None:
                self.status = EngineStatus.READY
            kind = reply.get("type")
            if kind == "error":
                raise WorkerEventError(
                    self.worker_id, str(reply.get("error")), event=event, attempts=attempt
                )
            if kind != "result":
                reason = self._crash(f"child answered {kind!r} to process")
                continue
            return reply
        raise WorkerEventError(
            self.worker_id,
            f"{reason}; gave up after {attempts} attempts",
            event=event,
            attempts=attempts,
        )

    def _emissions(self, reply: dict[str, Any], event: Envelope) -> list[Emission]:
        output = reply.get("cloudEvents", reply.get("cloudEvent"))
        try:
            return emissions_from_output(output)
        except ValueError as exc:
            raise WorkerEventError(
                self.worker_id, f"worker returned garbage: {exc}", event=event
            ) from None

    # ------------------------------------------------------------------ pings

    def _ping_loop(self) -> None:
        interval = self.options.ping_interval_secs
        while not self._halt.wait(interval):
            if not self._lock.acquire(blocking=False):
                continue  # busy with an event: its own timeout watches the child
            try:
                if self.status in (EngineStatus.FAILED, EngineStatus.STOPPED):
                    return
                self.ping()
            except (WorkerError, _Crash):
                pass
            finally:
                self._lock.release()

    def ping(self) -> bool:
        """Ping the child now; restart it if it does not answer. True if it answered."""
        with self._lock:
            try:
                reply = self._exchange(PING, self.options.ping_timeout_secs)
            except _Crash:
                return False
            if reply.get("type") != "pong":
                self._crash(f"child answered {reply.get('type')!r} to ping")
                return False
            self._last_pong = time.monotonic()
            return True

    # ------------------------------------------------------------------ engine hooks

    def _load(self) -> None:
        self._precheck()
        self._dir = tempfile.mkdtemp(prefix="vfw-")
        try:
            self._spawn()
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        if self.options.ping_interval_secs > 0:
            self._pinger = threading.Thread(
                target=self._ping_loop, name=f"vfw-ping-{self.worker_id}", daemon=True
            )
            self._pinger.start()

    def _run(self, event: Envelope, clock: Clock) -> Sequence[Emission]:
        frame = pack(PROCESS_PREFIX + event_json(event) + b"}")
        with self._lock:
            reply = self._call(frame, event, self.options.event_timeout_secs)
        return self._emissions(reply, event)

    def _run_batch(self, events: Sequence[Envelope]) -> list[RunResult]:
        frame = pack(BATCH_PREFIX + b",".join(event_json(e) for e in events) + b"]}")
        timeout = self.options.event_timeout_secs * len(events)
        with self._lock:
            try:
                reply = self._exchange(frame, timeout)
            except _Crash:
                reply = {}
            items = reply.get("results") if reply.get("type") == "result" else None
            if not isinstance(items, list) or len(items) != len(events):
                return super()._run_batch(events)  # one by one, each with its retries
            self._consecutive = 0
        results: list[RunResult] = []
        for event, item in zip(events, items, strict=True):
            if not isinstance(item, dict):
                item = {"error": "child sent a batch item that is not an object"}
            if "error" in item:
                results.append(WorkerEventError(self.worker_id, str(item["error"]), event=event))
                continue
            try:
                results.append(self._emissions(item, event))
            except WorkerEventError as exc:
                results.append(exc)
        return results

    def _stop(self) -> None:
        self._halt.set()
        if self._pinger is not None:
            self._pinger.join(timeout=5)
        with self._lock:
            chan, proc = self._chan, self._proc
            if chan is not None and proc is not None:
                with contextlib.suppress(OSError):
                    chan.send(SHUTDOWN, 1.0)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=2)
            self._discard_child()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def state_kind(self) -> str | None:
        return f"script@{self._state_version}" if self._stateful else None

    def snapshot(self) -> Any:
        """The child's state; a child that died since the last input is not restarted here.

        Raises:
            WorkerEventError: the child died or did not answer (the host hands the input back;
                the next child gets the previous state and processes it again).
            WorkerError: the script's ``Snapshot`` raised.
        """
        if not self._stateful:
            return super().snapshot()
        with self._lock:
            if self._chan is None:
                raise WorkerEventError(
                    self.worker_id, "the child died before its snapshot", event=None
                )
            try:
                reply = self._exchange(SNAPSHOT, self.options.event_timeout_secs)
            except _Crash as crash:
                raise WorkerEventError(self.worker_id, f"snapshot: {crash}", event=None) from None
            if reply.get("type") != "result" or "state" not in reply:
                raise WorkerError(self.worker_id, str(reply.get("error") or reply))
            self._last_state = reply["state"]
            self._has_state = True
            return self._last_state

    def restore(self, state: Any) -> None:
        if not self._stateful:
            super().restore(state)
            return
        frame = pack(b'{"type":"restore","state":' + json.dumps(state).encode() + b"}")
        with self._lock:
            try:
                reply = self._exchange(frame, self.options.event_timeout_secs)
            except (_Crash, WorkerError) as exc:
                raise WorkerLoadError(self.worker_id, f"restore failed: {exc}") from None
            if reply.get("type") != "result":
                raise WorkerLoadError(self.worker_id, str(reply.get("error") or reply))
            self._last_state = state
            self._has_state = True

    def _health(self) -> dict[str, Any]:
        proc = self._proc
        pong = self._last_pong
        return {
            "restarts": self.restarts,
            "pid": proc.pid if proc is not None else None,
            "last_pong_age_secs": None if pong is None else time.monotonic() - pong,
        }


class PythonScriptEngine(ProcessEngine):
    """``text/x-python``: a script with ``def Process(event)`` in a sandboxed child."""

    mime_type = MIME_PYTHON_SCRIPT

    def _precheck(self) -> None:
        if not Path(self.manifest.entry_point).is_file():
            raise WorkerLoadError(self.worker_id, f"{self.manifest.entry_point}: no such script")

    def _child_args(self) -> list[str]:
        return [
            "--code",
            self.manifest.entry_point,
            "--blocked",
            ",".join(self.options.blocked_modules),
        ]
