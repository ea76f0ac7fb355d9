"""Worker-engine benchmark: what each engine costs per event, beside a direct Python call.

Every engine runs the SMA-crossover strategy (``workers/sma_cross``: the class, the
``text/x-python`` script, the C library) on the bar fixture (``tests/fixtures/bars_small.jsonl``,
cycled). The baseline, measured in the same run, is the class worker's ``on_event`` called
directly with a `WorkerContext` (no engine, no stamping). Rows:

- ``engine.inprocess.python``: `InProcessEngine.process` (metrics, clock, stamping) — target
  within 2× of the direct call;
- ``engine.process.single`` / ``engine.process.batched``: the out-of-process script engine, one
  frame per event / one frame per 100 events — targets < 100 µs and < 20 µs per event;
- ``engine.native.inprocess``: `NativeEngine.process`, envelope → JSON → C → JSON → envelope —
  target < 20 µs per event; ``engine.native.call`` is the bare cffi call on pre-encoded JSON;
- ``engine.native.safe``: the same library in a safe-mode child — target < 100 µs per event.

``target`` is ``≤ x`` for a ratio to the baseline, ``< x µs`` for an absolute per-event time.

Run: ``python -m bench.engine_bench [--quick]`` (``make native`` first).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from virtufin.envelope import Envelope, decode
from virtufin.runtime.engine import Engine
from virtufin.runtime.factory import create_engine
from virtufin.runtime.manifest import WorkerManifest
from virtufin.runtime.native import NativeEngine
from virtufin.runtime.wire import event_json
from workers.kit import WorkerContext
from workers.sma_cross.worker import SmaCross, SmaCrossConfig

__all__ = ["TARGETS", "run"]

ROOT: Final = Path(__file__).resolve().parent.parent
BARS: Final = ROOT / "tests" / "fixtures" / "bars_small.jsonl"
BATCH: Final = 100
BASELINE: Final = "direct on_event call"
TARGETS: Final[dict[str, str]] = {
    "engine.inprocess.python": "≤ 2",
    "engine.process.single": "< 100 µs",
    f"engine.process.batched({BATCH})": "< 20 µs",
    "engine.native.inprocess": "< 20 µs",
    "engine.native.call": "",
    "engine.native.safe": "< 100 µs",
}


def _row(name: str, value: float, baseline: float, target: str) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "unit": "µs/event",
        "baseline_name": BASELINE,
        "baseline_value": baseline,
        "ratio": value / baseline,
        "target": target,
    }


def _events(n: int) -> list[Envelope]:
    bars = [decode(line) for line in BARS.read_bytes().splitlines()]
    return [bars[i % len(bars)] for i in range(n)]


Loop = Callable[[], None]


def _direct(events: Sequence[Envelope]) -> Loop:
    worker = SmaCross()
    worker.ctx = WorkerContext(worker_id="sma", config=SmaCrossConfig())
    worker.on_start(worker.ctx)
    ctx = worker.ctx
    on_event, take = worker.on_event, ctx.take_emitted

    def loop() -> None:
        for event in events:
            ctx.event = event  # what a host sets first: the input that ctx.order_id() derives from
            on_event(event)
            take()

    return loop


def _single(engine: Engine, events: Sequence[Envelope]) -> Loop:
    process = engine.process

    def loop() -> None:
        for event in events:
            process(event)

    return loop


def _batched(engine: Engine, events: Sequence[Envelope]) -> Loop:
    chunks = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]

    def loop() -> None:
        for chunk in chunks:
            engine.process_batch(chunk)

    return loop


def _native_call(engine: Engine, events: Sequence[Envelope]) -> Loop:
    assert isinstance(engine, NativeEngine)
    raw = [event_json(event) for event in events]
    call = engine.lib.process

    def loop() -> None:
        for body in raw:
            call(body)

    return loop


def _measure(loops: dict[str, Loop], n: int, rounds: int) -> dict[str, float]:
    """Best µs/event of each loop over `rounds` interleaved rounds (robust to a busy machine)."""
    for loop in loops.values():
        loop()  # warm up
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(rounds):
        for name, loop in loops.items():
            start = time.perf_counter()
            loop()
            best[name] = min(best[name], (time.perf_counter() - start) / n * 1e6)
    return best


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure every engine; rows as described in the module docstring."""
    subprocess.run(["make", "-s", "-C", str(ROOT / "native")], check=True)
    n, rounds = (600, 5) if quick else (3000, 15)
    events = _events(n)
    klass = WorkerManifest.load(ROOT / "workers/sma_cross/manifest.json")
    script = WorkerManifest.load(ROOT / "workers/sma_cross/script.manifest.json")
    native = WorkerManifest.load(ROOT / "native/build/libsma_cross.manifest.json")
    engines = {
        "class": create_engine(klass),
        "script": create_engine(script),
        "batched": create_engine(script),
        "native": create_engine(native),
        "call": create_engine(native),
        "safe": create_engine(native, isolation="process"),
    }
    try:
        for engine in engines.values():
            engine.load()
        best = _measure(
            {
                BASELINE: _direct(events),
                "engine.inprocess.python": _single(engines["class"], events),
                "engine.process.single": _single(engines["script"], events),
                f"engine.process.batched({BATCH})": _batched(engines["batched"], events),
                "engine.native.inprocess": _single(engines["native"], events),
                "engine.native.call": _native_call(engines["call"], events),
                "engine.native.safe": _single(engines["safe"], events),
            },
            n,
            rounds,
        )
    finally:
        for engine in engines.values():
            engine.stop()
    base = best.pop(BASELINE)
    return [_row(name, value, base, TARGETS[name]) for name, value in best.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_bench")
    parser.add_argument("--quick", action="store_true", help="fewer events, for a smoke run")
    args = parser.parse_args(argv)
    print(f"{'measurement':32} {'µs/event':>10} {'ratio':>8}  target", file=sys.stdout)
    for row in run(quick=args.quick):
        print(
            f"{row['name']:32} {row['value']:10.2f} {row['ratio']:8.2f}  {row['target']}",
            file=sys.stdout,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
