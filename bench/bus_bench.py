"""Event-bus benchmark: what the bus costs beside doing the same thing by hand, in the same run.

- Memory bus, publish → handler per event, against a plain Python call of the handler: the sync
  path (`publish_sync` to a `subscribe_sync` function, what backtests use) against a function
  call, the async path (`publish` to an async handler, until drained) against awaiting the
  handler directly. Both include lane validation and de-duplication, the bus's real work.
- NATS adapter, publish + consume throughput of N events (64 publishes in flight, one pull
  subscriber acking each) against raw nats-py JetStream doing the same: the same encoded
  CloudEvents with ``Nats-Msg-Id``, a pull consumer fetching batches, decoding and acking.
- NATS publish → handler latency, p50 and p99, with the publisher paced at 1k and at 10k
  events/s, the adapter against raw nats-py at the same pace, and the rate each reached when
  10k/s were offered. Publisher and subscriber share one Python process (as a service does);
  where that process cannot keep up with 10k/s (measured: ~4-6k/s on a 2-core machine, for
  the raw client as for the adapter) the 10k/s latencies are queueing time, not transit time.

``target`` is the acceptable ratio: ``≤ x`` for times (lower is better), ``≥ x`` for rates.
When NATS is unreachable its rows are left out with a warning.

Run: ``python -m bench.bus_bench [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import statistics
import sys
import time
import uuid
from asyncio.subprocess import PIPE
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from bench.rows import bench_row
from virtufin.bus.memory import MemoryBus
from virtufin.bus.port import Delivery
from virtufin.config import load_settings
from virtufin.envelope import Envelope, decode, encode
from virtufin.errors import BusError
from virtufin.eventloop import run as run_loop

__all__ = ["TARGETS", "run"]

log = logging.getLogger(__name__)

TOPIC: Final = "act.exchange.bench.trade.tick"
RATE: Final = 10_000
LOW_RATE: Final = 1_000
RAW_NAME: Final = "raw nats-py JetStream"
TYPE: Final = "com.virtufin.exchange.bench.trade.tick"
ROOT: Final = Path(__file__).resolve().parent.parent
WINDOW: Final = 64
#: Acceptable ratio per row (see the module docstring for the direction).
TARGETS: Final[dict[str, str]] = {
    "bus.memory.sync publish→handler": "≤ 3 (issue target; missed)",
    "bus.memory.async publish→handler": "≤ 3 (issue target; missed)",
    "bus.nats.throughput": "≥ 0.7",
    "bus.nats.latency p50 @1k/s": "≤ 1.2",
    "bus.nats.latency p99 @1k/s": "≤ 1.5",
    "bus.nats.publish rate reached @10k/s offered": "≥ 0.8",
    "bus.nats.latency p50 @10k/s": "≤ 1.5",
    "bus.nats.latency p99 @10k/s": "≤ 1.5",
}


def _row(name: str, value: float, unit: str, baseline_name: str, baseline: float) -> dict[str, Any]:
    return bench_row(name, value, unit, baseline_name, baseline, TARGETS[name])


def _events(n: int) -> list[Envelope]:
    return [Envelope.new(type=TYPE, source="urn:bench", data=i) for i in range(n)]


def _best(samples: list[float]) -> float:
    return min(samples)


# --------------------------------------------------------------------------- memory


def _memory_sync(n: int, repeats: int) -> dict[str, Any]:
    count = 0

    def handler(envelope: Envelope, delivery: Delivery) -> None:
        nonlocal count
        count += 1

    bus_times, call_times = [], []
    delivery = Delivery(TOPIC)
    for _ in range(repeats):
        events = _events(n)
        start = time.perf_counter()
        for ev in events:
            handler(ev, delivery)
        call_times.append((time.perf_counter() - start) / n * 1e6)

        bus = MemoryBus()
        bus.subscribe_sync(TOPIC, handler)
        start = time.perf_counter()
        for ev in events:
            bus.publish_sync(TOPIC, ev)
        bus_times.append((time.perf_counter() - start) / n * 1e6)
    assert count == 2 * n * repeats
    return _row(
        "bus.memory.sync publish→handler",
        _best(bus_times),
        "µs/event",
        "function call",
        _best(call_times),
    )


async def _memory_async(n: int, repeats: int) -> dict[str, Any]:
    count = 0

    async def handler(envelope: Envelope, delivery: Delivery) -> None:
        nonlocal count
        count += 1

    bus_times, call_times = [], []
    delivery = Delivery(TOPIC)
    for _ in range(repeats):
        events = _events(n)
        start = time.perf_counter()
        for ev in events:
            await handler(ev, delivery)
        call_times.append((time.perf_counter() - start) / n * 1e6)

        bus = MemoryBus()
        await bus.subscribe(TOPIC, handler)
        start = time.perf_counter()
        for ev in events:
            await bus.publish(TOPIC, ev)
        await bus.drain()
        bus_times.append((time.perf_counter() - start) / n * 1e6)
        await bus.close()
    assert count == 2 * n * repeats
    return _row(
        "bus.memory.async publish→handler",
        _best(bus_times),
        "µs/event",
        "await handler()",
        _best(call_times),
    )


# --------------------------------------------------------------------------- nats


class _Raw:
    """Raw nats-py JetStream: publish with Nats-Msg-Id, a pull consumer that decodes and acks."""

    def __init__(self, url: str, stream: str, subject: str) -> None:
        self.url, self.stream, self.subject = url, stream, subject
        self.nc: Any = None
        self.js: Any = None
        self.durable: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        import nats

        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()

    async def consume(self, on_event: Callable[[Envelope], None]) -> None:
        from nats.js.api import ConsumerConfig, DeliverPolicy

        self.durable = f"bench-raw-{uuid.uuid4().hex[:8]}"
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.NEW, max_ack_pending=4096, inactive_threshold=300.0
        )
        sub = await self.js.pull_subscribe(
            self.subject, durable=self.durable, stream=self.stream, config=config
        )

        async def loop() -> None:
            while True:
                try:
                    msgs = await sub.fetch(128, timeout=0.05)
                except TimeoutError:
                    continue
                for msg in msgs:
                    on_event(decode(msg.data))
                    await msg.ack()

        self._task = asyncio.create_task(loop())

    async def publish(self, envelope: Envelope) -> None:
        headers = {"Nats-Msg-Id": f"{envelope.source}|{envelope.id}"}
        await self.js.publish(self.subject, encode(envelope), headers=headers)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.durable is not None:
            await self.js.delete_consumer(self.stream, self.durable)
        await self.nc.close()


async def _adapter(url: str, subject: str, on_event: Callable[[Envelope], None]) -> Any:
    from virtufin.bus.nats import NatsBus

    bus = await NatsBus.connect(url=url, name=f"bench-{uuid.uuid4().hex[:8]}")

    async def handler(envelope: Envelope, delivery: Delivery) -> None:
        on_event(envelope)

    await bus.subscribe(subject, handler)
    return bus


async def _throughput(
    publish: Callable[[Envelope], Awaitable[None]], seen: dict[int, float], n: int
) -> float:
    """Events per second from the first publish until the last event was handled."""
    events = _events(n)
    seen.clear()
    start = time.perf_counter()
    for i in range(0, n, WINDOW):
        await asyncio.gather(*(publish(ev) for ev in events[i : i + WINDOW]))
    await _arrival(seen, n, start)
    return n / (time.perf_counter() - start)


async def _arrival(seen: dict[int, float], n: int, start: float) -> None:
    while True:
        if len(seen) >= n:
            return
        if time.perf_counter() - start > 60:
            raise TimeoutError(f"only {len(seen)} of {n} events arrived within 60 s")
        await asyncio.sleep(0.002)


async def _paced(url: str, subject: str, rate: int, seconds: float, raw: bool) -> None:
    """The publisher process of the latency runs: `rate` events/s for `seconds`, each
    stamped with the system-wide monotonic clock; prints the rate it reached."""
    from virtufin.bus.nats import NatsBus

    bus = await NatsBus.connect(url=url, name="bench-publisher")
    client = _Raw(url, bus.streams["act"], subject)
    await client.connect()
    publish: Callable[[Envelope], Awaitable[None]]
    if raw:
        publish = client.publish
    else:

        async def publish(envelope: Envelope) -> None:
            await bus.publish(subject, envelope)

    n = int(rate * seconds)
    gc.collect()
    gc.freeze()  # the start-up heap out of full collections, as in the subscriber
    pending: set[asyncio.Future[Any]] = set()
    start = time.perf_counter()
    i = 0
    while i < n:  # each millisecond, start the publishes that are due
        due = min(n, int((time.perf_counter() - start) * rate) + 1)
        batch = [
            Envelope.new(type=TYPE, source="urn:bench", data={"i": k, "t": time.monotonic_ns()})
            for k in range(i, due)
        ]
        i = due
        future = asyncio.gather(*(publish(ev) for ev in batch))
        pending.add(future)
        future.add_done_callback(pending.discard)
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
    await asyncio.gather(*pending)
    print(json.dumps({"rate": n / (time.perf_counter() - start)}), flush=True)
    await client.close()
    await bus.close()


async def _latencies(
    url: str, subject: str, seen: dict[int, float], rate: int, seconds: float, raw: bool
) -> tuple[float, float, float]:
    """p50 and p99 publish→handler in µs, from a publisher process paced at `rate`/s, and
    the rate it reached. Publishes start on schedule without waiting for earlier acks."""
    n = int(rate * seconds)
    seen.clear()
    args = ["-m", "bench.bus_bench", "--publish", url, subject, str(rate), str(seconds)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, *(["--raw"] if raw else []), stdout=PIPE, cwd=ROOT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the publisher process failed ({proc.returncode})")
    await _arrival(seen, n, time.perf_counter())
    q = statistics.quantiles(sorted(seen.values()), n=100)
    return q[49], q[98], float(json.loads(out)["rate"])


async def _purge(url: str, stream: str, subject: str) -> None:
    """Drop the benchmark's events from the shared stream."""
    import nats

    nc = await nats.connect(url)
    try:
        await nc.jetstream().purge_stream(stream, subject=subject)
    finally:
        await nc.close()


async def _nats(url: str, n: int, seconds: float) -> list[dict[str, Any]]:
    """Adapter and raw client each on their own subject, so each sees only its own events."""
    token = f"b{uuid.uuid4().hex[:10]}"
    bus_subject = f"act.exchange.{token}.trade.tick"
    raw_subject = f"act.exchange.{token}.raw.tick"
    bus_seen: dict[int, float] = {}
    raw_seen: dict[int, float] = {}

    def recorder(seen: dict[int, float]) -> Callable[[Envelope], None]:
        def on_event(envelope: Envelope) -> None:
            data = envelope.data
            if isinstance(data, dict):  # stamped by the publisher process: latency in µs
                seen[data["i"]] = (time.monotonic_ns() - data["t"]) / 1e3
            else:
                seen[int(data)] = time.perf_counter()

        return on_event

    bus = await _adapter(url, bus_subject, recorder(bus_seen))
    raw = _Raw(url, bus.streams["act"], raw_subject)
    try:
        await raw.connect()
        await raw.consume(recorder(raw_seen))

        async def via_bus(ev: Envelope) -> None:
            await bus.publish(bus_subject, ev)

        sides = (
            ("raw", raw.publish, raw_seen, raw_subject),
            ("adapter", via_bus, bus_seen, bus_subject),
        )
        for _, publish, seen, _ in sides:  # warm-up
            await _throughput(publish, seen, min(n, 500))
        # Best of two, alternating, so that load drifting on a shared machine hits both alike.
        rates: dict[str, float] = {"raw": 0.0, "adapter": 0.0}
        for _ in range(2):
            for side, publish, seen, _ in sides:
                rates[side] = max(rates[side], await _throughput(publish, seen, n))
        latency: dict[tuple[str, int], tuple[float, float]] = {}
        reached: dict[str, float] = {}
        # As services do once started: the heap so far (modules, the throughput runs' events)
        # out of the collector's full passes, which would stall this subscriber for ms each.
        gc.collect()
        gc.freeze()
        for rate in (LOW_RATE, RATE):
            for side, _, seen, subject in sides:
                p50, p99, achieved = await _latencies(
                    url, subject, seen, rate, seconds, raw=side == "raw"
                )
                latency[side, rate] = (p50, p99)
                reached[side] = achieved
    finally:
        await raw.close()
        await bus.delete_consumers()
        await bus.close()
        await _purge(url, bus.streams["act"], f"act.exchange.{token}.>")
    rows = [
        _row("bus.nats.throughput", rates["adapter"], "events/s", RAW_NAME, rates["raw"]),
        _row(
            "bus.nats.publish rate reached @10k/s offered",
            reached["adapter"],
            "events/s",
            RAW_NAME,
            reached["raw"],
        ),
    ]
    for rate in (LOW_RATE, RATE):
        label = f"@{rate // 1000}k/s"
        for i, quantile in enumerate(("p50", "p99")):
            rows.append(
                _row(
                    f"bus.nats.latency {quantile} {label}",
                    latency["adapter", rate][i],
                    "µs",
                    RAW_NAME,
                    latency["raw", rate][i],
                )
            )
    return rows


# --------------------------------------------------------------------------- entry points


async def _run(quick: bool) -> list[dict[str, Any]]:
    n, repeats = (2_000, 2) if quick else (50_000, 5)
    rows = [_memory_sync(n, repeats), await _memory_async(n, repeats)]
    url = load_settings().nats_url
    try:
        rows += await _nats(url, 2_000 if quick else 20_000, 0.5 if quick else 2.0)
    except (BusError, OSError) as exc:
        log.warning("bus bench: NATS rows left out, %s is unreachable (%s)", url, exc)
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure the buses beside their baselines; rows as `bench/__main__.py` expects."""
    return run_loop(_run(quick))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bus_bench")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--publish", nargs=4, metavar=("URL", "SUBJECT", "RATE", "SECONDS"), help=argparse.SUPPRESS
    )  # the publisher process of the latency runs
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publish:
        url, subject, rate, seconds = args.publish
        run_loop(_paced(url, subject, int(rate), float(seconds), args.raw))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"{'measurement':34} {'value':>10} {'unit':9} {'baseline':22} {'value':>10} ratio target")
    for row in run(quick=args.quick):
        print(
            f"{row['name']:34} {row['value']:>10.3g} {row['unit']:9} {row['baseline_name']:22} "
            f"{row['baseline_value']:>10.3g} {row['ratio']:5.2f} {row['target']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
