"""`virtufin worker test`: run a worker on recorded CloudEvents and print what it emits.

The target picks the engine by MIME type: a ``manifest.json``, a ``text/x-python`` script
(``code.py``), a native library (``lib<name>.so``, with its ``lib<name>.manifest.json`` when
present) or an in-process class (``module:Class`` or ``file.py:Class``). Every emitted envelope
is printed on stdout as one structured JSON line; a summary (events in/out, errors, mean
µs/event) goes to stderr. Exit status: 0 all good, 1 some events failed, 2 the worker or the
events could not be loaded.

Also runnable as ``python -m virtufin.cli.worker test …``.

Example:
    $ virtufin worker test workers/sma_cross/script.py --param fast=5 \\
          --events tests/fixtures/bars_small.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from virtufin.envelope import Envelope, decode, encode
from virtufin.errors import EnvelopeError, WorkerError, WorkerEventError, WorkerLoadError
from virtufin.runtime.constants import MIME_TYPES
from virtufin.runtime.engine import Engine
from virtufin.runtime.factory import create_engine
from virtufin.runtime.manifest import resolve_target
from virtufin.runtime.routing import Binding

__all__ = ["build_parser", "main", "parse_params", "read_events", "register", "run_test"]


class _Usage(Exception):
    """A user error: bad parameter syntax or an unreadable events file."""


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``k=v`` pairs to a dict; ``v`` is JSON when it parses (``5``, ``true``), else a string."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise _Usage(f"--param {pair!r}: expected KEY=VALUE")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def read_events(path: Path) -> list[Envelope]:
    """One structured CloudEvent per line (blank lines skipped)."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise _Usage(f"cannot read events: {exc}") from None
    events = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                events.append(decode(line))
            except EnvelopeError as exc:
                raise _Usage(f"{path}:{number}: {exc}") from None
    return events


def _run_events(
    engine: Engine, events: list[Envelope], batch: int, out: TextIO, err: TextIO
) -> tuple[int, int]:
    emitted = errors = 0

    def show(envelopes: Sequence[Envelope]) -> None:
        nonlocal emitted
        for envelope in envelopes:
            out.write(encode(envelope).decode("utf-8") + "\n")
            emitted += 1

    if batch > 1:
        for start in range(0, len(events), batch):
            for outcome in engine.process_batch(events[start : start + batch]):
                if outcome.error is not None:
                    errors += 1
                    print(f"error: event {outcome.event.id}: {outcome.error.reason}", file=err)
                show([routed.envelope for routed in outcome.outputs])
        return emitted, errors
    for event in events:
        try:
            show(engine.process(event))
        except WorkerEventError as exc:
            errors += 1
            print(f"error: event {event.id}: {exc.reason}", file=err)
    return emitted, errors


def run_test(
    args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """The ``worker test`` command; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    prog = "virtufin worker test"
    try:
        params = parse_params(args.param)
        events = read_events(Path(args.events))
        manifest = resolve_target(args.target, mime=args.mime)
        binding = Binding(clock=args.clock, scenario_id=args.scenario)
        engine = create_engine(
            manifest,
            params=params,
            binding=binding,
            isolation="process" if args.safe_mode else None,
        )
        engine.load()
    except _Usage as exc:
        print(f"{prog}: {exc}", file=err)
        return 2
    except WorkerLoadError as exc:
        print(f"{prog}: cannot load worker {exc.worker_id!r}: {exc.reason}", file=err)
        return 2
    try:
        emitted, errors = _run_events(engine, events, args.batch, out, err)
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly
        return 0
    except WorkerError as exc:
        print(f"{prog}: worker {exc.worker_id!r} failed: {exc.reason}", file=err)
        return 1
    finally:
        engine.stop()
    stats = engine.metrics.snapshot()
    print(
        f"worker {manifest.id} ({manifest.mime_type}, {type(engine).__name__}): "
        f"events in {len(events)}, events out {emitted}, errors {errors}, "
        f"mean {stats.mean_us:.1f} µs/event",
        file=err,
    )
    return 1 if errors else 0


def _add_subcommands(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="worker_command", metavar="COMMAND", required=True)
    test = sub.add_parser(
        "test",
        help="run a worker on recorded CloudEvents",
        description="Run a worker on recorded CloudEvents; print what it emits.",
    )
    test.add_argument("target", help="manifest.json, code.py, lib<name>.so or module:Class")
    test.add_argument("--events", required=True, help="JSON lines file, one CloudEvent a line")
    test.add_argument("--mime", choices=MIME_TYPES, help="override the MIME type")
    test.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="parameter override (VALUE is JSON if it parses, else a string); repeatable",
    )
    test.add_argument(
        "--safe-mode", action="store_true", help="run a native library in a child process"
    )
    test.add_argument(
        "--batch", type=int, default=0, metavar="N", help="send N events per frame (batched)"
    )
    test.add_argument("--clock", choices=("auto", "wall", "historical"), default="auto")
    test.add_argument("--scenario", help="scenario id for inputs that carry none")
    test.set_defaults(handler=run_test)


def register(subparsers: Any) -> None:
    """Add ``worker`` (with ``test``) to the `virtufin` command."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "worker", help="develop and test workers", description="Develop and test workers."
    )
    _add_subcommands(parser)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m virtufin.cli.worker``."""
    parser = argparse.ArgumentParser(
        prog="virtufin worker", description="Develop and test workers."
    )
    _add_subcommands(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m virtufin.cli.worker test …``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    status: int = args.handler(args)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status


if __name__ == "__main__":
    sys.exit(main())
