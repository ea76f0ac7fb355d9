"""`virtufin serve <service>`: run one service of ``services.json`` in this process.

The convention (documented in `services` and docs/services.md): the entry's ``module``
(``services.gateway``, or ``pkg.mod:function``) exposes ``async def serve(ctx)``; this command
loads the configuration (``services.json`` < environment < flags), sets up JSON logging, builds
the `ServiceContext` (bound gRPC server, interceptors, health, metrics) and awaits ``serve(ctx)``
until the service shut down gracefully (SIGTERM/SIGINT; a second signal exits at once), on
uvloop when it is installed (`virtufin.eventloop`).

Also runnable as ``python -m virtufin.cli.serve <service> …``.

Example:
    $ VIRTUFIN_BUS=nats VIRTUFIN_API_KEYS=k1 virtufin serve gateway --grpc-port 5002
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from virtufin.errors import ConfigError
from virtufin.eventloop import run

__all__ = ["build_parser", "main", "register", "resolve_entry"]

ServeFunction = Callable[[Any], Awaitable[None]]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", help="service name in services.json (gateway, workmanager, …)")
    parser.add_argument("--services", help="path of services.json (default: $VIRTUFIN_SERVICES)")
    parser.add_argument("--bus", choices=("memory", "nats", "dapr"), help="event bus adapter")
    parser.add_argument(
        "--state", choices=("memory", "sqlite", "postgres", "redis", "dapr"), help="state store"
    )
    parser.add_argument("--nats-url", help="NATS server URL(s)")
    parser.add_argument("--state-dir", help="folder of the sqlite state file")
    parser.add_argument("--grpc-host", help="interface to bind (default: grpc.host)")
    parser.add_argument("--grpc-port", type=int, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--health-port", type=int, help="HTTP /metrics and /healthz port; -1 turns it off"
    )
    parser.add_argument("--grace", type=float, dest="grace_seconds", help="shutdown grace, s")
    parser.add_argument("--max-message-bytes", type=int, help="largest request accepted")
    parser.add_argument(
        "--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), type=str.upper
    )


def register(subparsers: Any) -> None:
    """Add ``serve`` to the `virtufin` command."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="run one service of services.json (gateway, workmanager, …)"
    )
    _add_arguments(parser)
    parser.set_defaults(handler=_run)


def resolve_entry(module: str) -> ServeFunction:
    """The ``serve`` function named by a ``services.json`` ``module`` value.

    Raises:
        ConfigError: the module cannot be imported or has no such coroutine function.
    """
    name, _, attribute = module.partition(":")
    attribute = attribute or "serve"
    try:
        loaded = importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError("services.json", "module", f"cannot import {name!r} ({exc})") from exc
    entry = getattr(loaded, attribute, None)
    if entry is None or not asyncio.iscoroutinefunction(entry):
        raise ConfigError(
            "services.json", "module", f"{name}.{attribute} is not an `async def {attribute}(ctx)`"
        )
    result: ServeFunction = entry
    return result


async def _serve(config: Any, entry: ServeFunction) -> None:
    from services.bootstrap import create_context

    ctx = await create_context(config)
    try:
        await entry(ctx)
    finally:
        await ctx.close()  # a no-op after a normal run; cleans up a failed start


def _run(args: argparse.Namespace) -> int:
    from services.bootstrap import configure_logging, load_serve_config

    flags = {
        key: getattr(args, key)
        for key in (
            "services",
            "bus",
            "state",
            "nats_url",
            "state_dir",
            "grpc_host",
            "grpc_port",
            "health_port",
            "grace_seconds",
            "max_message_bytes",
            "log_level",
        )
    }
    config = load_serve_config(args.service, flags=flags)
    configure_logging(config.service.name, level=config.options.log_level)
    entry = resolve_entry(config.service.module)
    run(_serve(config, entry))  # uvloop when installed (virtufin.eventloop)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m virtufin.cli.serve``."""
    parser = argparse.ArgumentParser(
        prog="virtufin serve", description="Run one service of services.json."
    )
    _add_arguments(parser)
    parser.set_defaults(handler=_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m virtufin.cli.serve``; returns the exit status."""
    from virtufin.cli.main import dispatch

    return dispatch(build_parser().parse_args(argv), prog="virtufin serve")


if __name__ == "__main__":
    sys.exit(main())
