"""`virtufin up` and `virtufin status`: run the services of ``services.json`` and check them.

``virtufin up`` starts every service of ``services.json`` (or ``--only`` some):

- ``--bus nats`` (or dapr), the default for several services: one ``virtufin serve <name>``
  process each (own process group, logs in ``--logs``, default ``<state dir>/logs``). With
  ``VIRTUFIN_<SERVICE>_NATS_PASSWORD`` set, each process connects as its own NATS user (the
  lane permissions of ``infra/nats/auth.conf``);
- ``--bus memory``: all services inside this one process, sharing one in-process bus and one
  state store (the embedded default: no broker needed).

It waits until each answers the gRPC health check with SERVING, prints a table (name, pid,
address, health), and stops them cleanly on Ctrl-C or SIGTERM: SIGTERM to each process, up to
``--grace`` seconds, then SIGKILL for stragglers. A service that does not come up, or dies
while running, stops the rest and ``up`` exits with status 1 naming it.

``virtufin status`` asks the gateway (``Config.ListServices``, and ``Gateway.ListServices`` for
its own view of each backend), checks the health of each service itself, prints a table and
exits with status 1 naming what is down.

Also runnable as ``python -m virtufin.cli.up up|status …``.

Example:
    $ virtufin up --bus memory
    $ VIRTUFIN_API_KEY=k virtufin status
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

from virtufin import eventloop
from virtufin.config import ServiceConfig, ServicesConfig, load_services, load_settings
from virtufin.errors import ConfigError

__all__ = [
    "ServiceRow",
    "build_parser",
    "health_of",
    "main",
    "nats_url_for",
    "register",
    "render_table",
]

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT_S: Final = 60.0
DEFAULT_GRACE_S: Final = 10.0
_POLL_S: Final = 0.2
_SERVING: Final = "SERVING"
_DOWN: Final = "DOWN"


# --------------------------------------------------------------------------- shared


@dataclass
class ServiceRow:
    """One line of the tables."""

    name: str
    address: str
    health: str = _DOWN
    pid: int | None = None
    detail: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return self.health == _SERVING


def render_table(rows: Sequence[ServiceRow], *, pid: bool = True) -> str:
    """A plain-text table: name, pid, address, health (and any extra columns)."""
    extra = list(dict.fromkeys(k for row in rows for k in row.extra))
    header = ["NAME", *(["PID"] if pid else []), "ADDRESS", "HEALTH", *extra, "DETAIL"]
    lines = [
        [
            row.name,
            *([str(row.pid) if row.pid is not None else "-"] if pid else []),
            row.address,
            row.health,
            *(row.extra.get(k, "") for k in extra),
            row.detail,
        ]
        for row in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out += [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    return "\n".join(out)


async def health_of(address: str, *, timeout_s: float = 2.0) -> tuple[str, str]:
    """``(SERVING|NOT_SERVING|…|DOWN, detail)`` of the standard gRPC health check."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            return _DOWN, f"{exc.code().name}: {exc.details() or 'unreachable'}"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)), ""


def nats_url_for(service: str, url: str, env: dict[str, str]) -> str:
    """`url` with the service's NATS user and ``$VIRTUFIN_<SERVICE>_NATS_PASSWORD`` in it
    (unchanged when that variable is unset or the URL carries credentials already)."""
    from virtufin.permissions import password_variable

    password = env.get(password_variable(service))
    if not password:
        return url
    out = []
    for part in url.split(","):
        parts = urlsplit(part.strip())
        if "@" in parts.netloc:
            out.append(part.strip())
            continue
        netloc = f"{quote(service, safe='')}:{quote(password, safe='')}@{parts.netloc}"
        out.append(urlunsplit(parts._replace(netloc=netloc)))
    return ",".join(out)


def _broker_reachable(url: str) -> str | None:
    """None if some server of `url` accepts TCP connections, else why not."""
    problems = []
    for part in url.split(","):
        parts = urlsplit(part.strip())
        host, port = parts.hostname or "127.0.0.1", parts.port or 4222
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return None
        except OSError as exc:
            problems.append(f"{host}:{port} ({exc.strerror or exc})")
    return ", ".join(problems)


# --------------------------------------------------------------------------- up


class _Stopper:
    """The first SIGINT/SIGTERM asks for a clean stop."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signal: str = ""

    def __enter__(self) -> _Stopper:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on, sig)
        return self

    def _on(self, sig: signal.Signals) -> None:
        self.signal = sig.name
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)


def _selected(services: ServicesConfig, only: str | None) -> list[ServiceConfig]:
    if not only:
        return list(services.services)
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    return [services.get(name) for name in wanted]


def _print(text: str, out: IO[str]) -> None:
    print(text, file=out, flush=True)


async def _wait_healthy(
    rows: list[ServiceRow],
    deadline: float,
    failed: Callable[[], str | None],
) -> str | None:
    """Poll until every row is SERVING; the reason when something failed or timed out."""
    while True:
        for row in rows:
            if not row.up:
                row.health, row.detail = await health_of(row.address, timeout_s=1.0)
        if all(row.up for row in rows):
            return None
        problem = failed()
        if problem is not None:
            return problem
        if time.monotonic() > deadline:
            late = ", ".join(f"{r.name} ({r.health})" for r in rows if not r.up)
            return f"not SERVING within the start timeout: {late}"
        await asyncio.sleep(_POLL_S)


@dataclass
class _Child:
    service: ServiceConfig
    process: subprocess.Popen[bytes]
    log_path: Path


def _stop_children(children: Sequence[_Child], grace_s: float, out: IO[str]) -> None:
    """SIGTERM each, wait up to `grace_s` overall, then SIGKILL whoever is left."""
    for child in children:
        if child.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            child.process.wait(remaining)
        except subprocess.TimeoutExpired:
            _print(
                f"virtufin up: {child.service.name} (pid {child.process.pid}) did not stop "
                f"within {grace_s:g} s; killing it",
                out,
            )
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            child.process.wait(5)


async def _up_processes(
    args: argparse.Namespace, services: ServicesConfig, selected: list[ServiceConfig], out: IO[str]
) -> int:
    settings = load_settings(
        flags={
            "bus": args.bus,
            "state": args.state,
            "nats_url": args.nats_url,
            "state_dir": args.state_dir,
        }
    )
    if settings.bus == "nats":
        problem = _broker_reachable(settings.nats_url)
        if problem is not None:
            _print(
                f"virtufin up: NATS is not reachable at {settings.nats_url}: {problem}; "
                "start nats-server -js, or run everything in one process with --bus memory",
                out,
            )
            return 1
    logs = Path(args.logs) if args.logs else settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    children: list[_Child] = []
    rows = [ServiceRow(s.name, s.grpc.address) for s in selected]
    with _Stopper() as stopper:
        try:
            for service in selected:
                command = [
                    sys.executable,
                    "-m",
                    "virtufin.cli.serve",
                    service.name,
                    "--bus",
                    settings.bus,
                    "--state",
                    settings.state,
                    "--state-dir",
                    str(settings.state_dir),
                ]
                if args.services:
                    command += ["--services", str(args.services)]
                if settings.bus == "nats":
                    command += ["--nats-url", nats_url_for(service.name, settings.nats_url, env)]
                log_path = logs / f"{service.name}.log"
                with log_path.open("ab") as sink:
                    process = await asyncio.to_thread(
                        subprocess.Popen,
                        command,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env=env,
                        start_new_session=True,  # Ctrl-C reaches `up`, which stops them once
                    )
                children.append(_Child(service, process, log_path))
            for row, child in zip(rows, children, strict=True):
                row.pid = child.process.pid

            def dead() -> str | None:
                for child in children:
                    code = child.process.poll()
                    if code is not None:
                        return (
                            f"{child.service.name} (pid {child.process.pid}) exited with status "
                            f"{code}; its log {child.log_path} ends with:{_tail(child.log_path)}"
                        )
                if stopper.event.is_set():
                    return f"interrupted by {stopper.signal}"
                return None

            problem = await _wait_healthy(rows, time.monotonic() + args.start_timeout, dead)
            _print(render_table(rows), out)
            if problem is not None:
                _print(f"virtufin up: stopping the others: {problem}", out)
                return 1
            _print(
                f"virtufin up: {len(rows)} service(s) SERVING; logs in {logs}; Ctrl-C stops them",
                out,
            )
            while not stopper.event.is_set():
                problem = dead()
                if problem is not None:
                    for row, child in zip(rows, children, strict=True):
                        if child.process.poll() is not None:
                            row.health, row.detail = _DOWN, f"exited ({child.process.returncode})"
                    _print(render_table(rows), out)
                    _print(f"virtufin up: stopping the others: {problem}", out)
                    return 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopper.event.wait(), 0.5)
            _print(
                f"virtufin up: {stopper.signal or 'stop'} received; stopping "
                f"{len(children)} service(s)",
                out,
            )
            return 0
        finally:
            await asyncio.to_thread(_stop_children, children, args.grace, out)
            _print("virtufin up: stopped", out)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return ("\n  " + "\n  ".join(text)) if text else ""


async def _up_in_process(
    args: argparse.Namespace, services: ServicesConfig, selected: list[ServiceConfig], out: IO[str]
) -> int:
    """Every selected service in this process, sharing one `MemoryBus` and one store."""
    from services.bootstrap import JsonFormatter, load_serve_config
    from virtufin.cli.inprocess import services_in_process

    flags = {
        "services": args.services,
        "bus": "memory",
        "state": args.state,
        "state_dir": args.state_dir,
    }
    configs = [load_serve_config(s.name, flags=flags) for s in selected]
    settings = configs[0].settings
    logs = Path(args.logs) if args.logs else settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / "virtufin-up.log")
    handler.setFormatter(JsonFormatter("virtufin-up"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(configs[0].options.log_level)

    rows = [ServiceRow(s.name, s.grpc.address, pid=os.getpid()) for s in selected]
    with _Stopper() as stopper:
        try:
            async with services_in_process(configs, grace_s=args.grace) as running:

                def dead() -> str | None:
                    problem = running.dead()
                    if problem is None and stopper.event.is_set():
                        return f"interrupted by {stopper.signal}"
                    return problem

                problem = await _wait_healthy(rows, time.monotonic() + args.start_timeout, dead)
                _print(render_table(rows), out)
                if problem is not None:
                    _print(f"virtufin up: stopping the others: {problem}", out)
                    return 1
                _print(
                    f"virtufin up: {len(rows)} service(s) SERVING in this process (pid "
                    f"{os.getpid()}, in-process bus); logs in {logs}; Ctrl-C stops them",
                    out,
                )
                while not stopper.event.is_set():
                    problem = running.dead()
                    if problem is not None:
                        _print(f"virtufin up: stopping the others: {problem}", out)
                        return 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopper.event.wait(), 0.5)
                _print(
                    f"virtufin up: {stopper.signal} received; stopping {len(rows)} service(s)",
                    out,
                )
                return 0
        except ConfigError as exc:
            _print(f"virtufin up: stopping the others: {exc.field} {exc.reason}", out)
            return 1
        finally:
            _print("virtufin up: stopped", out)


def _run_up(args: argparse.Namespace) -> int:
    services = load_services(args.services).with_overrides(os.environ)
    selected = _selected(services, args.only)
    if not selected:
        raise ConfigError(services.path, "services", "no service selected")
    bus = args.bus or os.environ.get("VIRTUFIN_BUS") or ("memory" if len(selected) == 1 else "nats")
    args.bus = bus
    runner = _up_in_process if bus == "memory" else _up_processes
    return eventloop.run(runner(args, services, selected, sys.stdout))


# --------------------------------------------------------------------------- status


async def _status(args: argparse.Namespace, out: IO[str]) -> int:
    import grpc

    from virtufin.client import AsyncClient, ClientError

    local = load_services(args.services).with_overrides(os.environ)
    gateway_entry = next((s for s in local.services if s.role == "gateway"), None)
    target = args.gateway or (gateway_entry.grpc.address if gateway_entry else "127.0.0.1:5002")
    key = args.api_key or os.environ.get("VIRTUFIN_API_KEY")
    if not key:
        keys = [k for k in (os.environ.get("VIRTUFIN_API_KEYS") or "").split(",") if k.strip()]
        key = keys[0].strip() if keys else None
    async with AsyncClient(target, api_key=key, timeout=args.timeout) as client:
        try:
            catalogue = await client.config.list_services()
            views = {s.name: s for s in await client.gateway.list_services()}
        except ClientError as exc:
            why = exc.message or exc.code.name
            if exc.code is grpc.StatusCode.UNAUTHENTICATED:
                why += " (pass --api-key or set VIRTUFIN_API_KEY)"
            _print(
                f"virtufin status: the gateway at {target} is unavailable: {exc.code.name}: {why}",
                out,
            )
            return 1
    rows = []
    for service in catalogue:
        address = f"{service.grpc.host}:{service.grpc.port}"
        health, detail = await health_of(address, timeout_s=args.timeout)
        view = views.get(service.name)
        seen = "self" if service.role == "gateway" else ("yes" if view and view.healthy else "no")
        rows.append(
            ServiceRow(service.name, address, health, detail=detail, extra={"GATEWAY SEES": seen})
        )
    _print(render_table(rows, pid=False), out)
    down = [r for r in rows if not r.up]
    if down:
        names = ", ".join(f"{r.name} ({r.health.lower()})" for r in down)
        _print(f"virtufin status: {len(down)} of {len(rows)} service(s) down: {names}", out)
        return 1
    _print(f"virtufin status: all {len(rows)} service(s) SERVING", out)
    return 0


def _run_status(args: argparse.Namespace) -> int:
    return asyncio.run(_status(args, sys.stdout))


# --------------------------------------------------------------------------- wiring


def _add_up(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--services", help="path of services.json (default: $VIRTUFIN_SERVICES)")
    parser.add_argument("--only", help="comma-separated service names (default: all)")
    parser.add_argument(
        "--bus",
        choices=("memory", "nats", "dapr"),
        help="memory: all services in this process; nats/dapr: one process each "
        "(default: $VIRTUFIN_BUS, else nats for several services)",
    )
    parser.add_argument("--state", choices=("memory", "sqlite", "postgres", "redis", "dapr"))
    parser.add_argument("--nats-url", help="NATS server URL(s)")
    parser.add_argument("--state-dir", help="folder of the sqlite state file and the logs")
    parser.add_argument("--logs", help="folder of the service logs (default: <state dir>/logs)")
    parser.add_argument(
        "--start-timeout", type=float, default=DEFAULT_START_TIMEOUT_S, help="seconds to SERVING"
    )
    parser.add_argument(
        "--grace", type=float, default=DEFAULT_GRACE_S, help="seconds between SIGTERM and SIGKILL"
    )
    parser.set_defaults(handler=_run_up)


def _add_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--services", help="services.json naming the gateway (default: ours)")
    parser.add_argument("--gateway", help="gateway host:port (default: from services.json)")
    parser.add_argument("--api-key", help="x-api-key (default: $VIRTUFIN_API_KEY)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per call")
    parser.set_defaults(handler=_run_status)


def register(subparsers: Any) -> None:
    """Add ``up`` and ``status`` to the `virtufin` command."""
    _add_up(subparsers.add_parser("up", help="start the services of services.json"))
    _add_status(subparsers.add_parser("status", help="health of every service, via the gateway"))


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m virtufin.cli.up``."""
    parser = argparse.ArgumentParser(prog="virtufin", description="Run and check the services.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m virtufin.cli.up``; returns the exit status."""
    from virtufin.cli.main import dispatch

    args = build_parser().parse_args(argv)
    return dispatch(args, prog=f"virtufin {args.command}")


if __name__ == "__main__":
    sys.exit(main())
