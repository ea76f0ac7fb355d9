"""Live pipeline benchmark: market event → worker → order → fill, through NATS JetStream.

Setup (all on loopback, one private ``nats-server -js`` started for the run, or
``VIRTUFIN_NATS_URL`` when no server binary is installed):

- the WorkManager and the execution service run as processes (``virtufin serve``), sharing a
  SQLite state file; the WorkManager hosts `EveryBar`, a worker that answers every bar with a
  one-unit market order; the execution service fills at the last price
  (``VIRTUFIN_EXECUTION_FILL=close``), so each bar yields one fill at once;
- this process publishes bars on ``act.exchange.bench.ohlcv.candle.1s.<symbol>`` at about
  1 000 per second, as the marketdata connector does (each publish acknowledged by JetStream),
  and receives the fills on ``sc.LIVE.trading.order.filled``. A fill's ``correlationid`` is
  its bar's id, so latency = fill received − bar publish started: three JetStream hops (bar,
  order, fill, each stored and delivered) and two services in between.
- two loads: the headline, 1 000 bars/s of which every tenth makes an order (100 orders/s,
  each answered with accepted, filled, position and PnL events), and a stress row where every
  bar makes an order (1 000 orders/s, about 5 000 acknowledged publishes/s through the
  execution service alone).

Baseline, same run, same server: a raw nats-py request/reply hop (core NATS, a responder
subscribed in this process) at the same rate.

Run: ``python -m bench.live_bench [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from bench.rows import bench_row
from virtufin import eventloop
from virtufin.envelope import Envelope
from virtufin.ports import free_port
from virtufin.topics import EventTypes
from workers.kit import Worker, WorkerContext

__all__ = ["TARGETS", "EveryBar", "run"]

log = logging.getLogger("bench.live")
REPO: Final = Path(__file__).resolve().parent.parent
API_KEY: Final = "bench-key"
RATE_PER_S: Final = 1_000.0
BAR_PREFIX: Final = "act.exchange.bench.ohlcv.candle.1s."
#: (label, symbol, an order every n bars)
LOADS: Final = (("1k bars/s, 100 orders/s", "TENTH", 10), ("1k bars/s, 1k orders/s", "EVERY", 1))
TARGETS: Final[dict[str, str]] = {
    "live.bar→fill latency p50 (1k bars/s, 100 orders/s)": "report (p99 is the target)",
    "live.bar→fill latency p99 (1k bars/s, 100 orders/s)": "< 5 ms",
    "live.fills per order (1k bars/s, 100 orders/s)": "= 1",
    "live.bar→fill latency p50 (1k bars/s, 1k orders/s)": "report (stress: queueing)",
    "live.fills/s sustained (1k bars/s, 1k orders/s)": "report (stress: capacity)",
    "live.fills per order (1k bars/s, 1k orders/s)": "= 1",
}
ORDER: Final = EventTypes.order("submitted")


class EveryBar(Worker):
    """A one-unit market order on every ``every``-th bar (parameter, default 1), alternating
    buy and sell (no strategy: the benchmark measures the pipeline)."""

    def on_start(self, ctx: WorkerContext) -> None:
        self.count = 0
        self.bars = 0
        self.every = int(ctx.params.get("every", 1))

    def on_event(self, event: Envelope) -> None:
        self.bars += 1
        if self.bars % self.every:
            return
        self.count += 1
        data: Any = event.data
        self.ctx.emit(
            ORDER,
            {
                "order_id": self.ctx.order_id(),
                "symbol": data["symbol"],
                "side": "buy" if self.count % 2 else "sell",
                "type": "market",
                "qty": 1.0,
                "limit_price": None,
                "sizing": "units",
                "exclusive": False,
                "reason": "bench",
            },
        )


def _row(name: str, value: float, unit: str, baseline_name: str, baseline: float) -> dict[str, Any]:
    return bench_row(name, value, unit, baseline_name, baseline, TARGETS[name])


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# --------------------------------------------------------------------------- processes


class _Stack:
    """A private NATS server (when one is installed) and the two services, as processes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []
        self.nats_url = os.environ.get("VIRTUFIN_NATS_URL") or "nats://127.0.0.1:4222"
        self.ports = {"workmanager": free_port(), "execution": free_port()}

    def start(self) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if Path(binary).exists():
            port = free_port()
            store = self.folder / "nats"
            self._spawn(
                [binary, "-js", "-sd", str(store), "-a", "127.0.0.1", "-p", str(port)], "nats"
            )
            self.nats_url = f"nats://127.0.0.1:{port}"
            _wait_port(port)
        catalogue = json.loads((REPO / "services.json").read_text())
        entries = []
        for entry in catalogue["services"]:
            if entry["name"] in self.ports:
                entry["grpc"] = {**entry["grpc"], "port": self.ports[entry["name"]], "hosts": []}
                entry["healthPort"] = free_port()
                entries.append(entry)
        services = self.folder / "services.json"
        services.write_text(json.dumps({"services": entries}))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VIRTUFIN_")},
            "PYTHONPATH": str(REPO),
            "VIRTUFIN_BUS": "nats",
            "VIRTUFIN_NATS_URL": self.nats_url,
            "VIRTUFIN_STATE": "sqlite",
            "VIRTUFIN_STATE_DIR": str(self.folder / "state"),
            "VIRTUFIN_API_KEYS": API_KEY,
            "VIRTUFIN_LOG_LEVEL": "WARNING",
            "VIRTUFIN_EXECUTION_FILL": "close",
            "VIRTUFIN_EXECUTION_CASH": "1e12",
            "VIRTUFIN_HOME": str(REPO),
        }
        for name in self.ports:
            command = [
                sys.executable,
                "-m",
                "virtufin.cli.serve",
                name,
                "--services",
                str(services),
                "--health-port",
                "-1",
            ]
            self._spawn(command, name, env=env)

    def _spawn(self, command: list[str], label: str, env: dict[str, str] | None = None) -> None:
        with (self.folder / f"{label}.log").open("ab") as sink:
            self.processes.append(
                subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO)
            )

    async def wait_serving(self, within_s: float = 60.0) -> None:
        from virtufin.cli.up import health_of

        deadline = time.monotonic() + within_s
        for name, port in self.ports.items():
            while (await health_of(f"127.0.0.1:{port}"))[0] != "SERVING":
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                    log_text = (self.folder / f"{name}.log").read_text(errors="replace")
                    raise RuntimeError(f"{name} did not start:\n{log_text[-3000:]}")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")


# --------------------------------------------------------------------------- measuring


async def _create_worker(stack: _Stack, symbol: str, every: int) -> None:
    import grpc

    from virtufin.proto import ensure_built

    ensure_built()
    from virtufin.proto.gen import workmanager_pb2, workmanager_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports['workmanager']}") as channel:
        await workmanager_pb2_grpc.WorkManagerStub(channel).CreateWorker(
            workmanager_pb2.CreateWorkerRequest(
                id=f"bench-{symbol.lower()}",
                code_source=workmanager_pb2.CodeSource(url="bench.live_bench:EveryBar"),
                topic=BAR_PREFIX + symbol,
                group=f"bench-{symbol.lower()}",
                parameters_json=json.dumps({"every": every}),
                scenario_id="LIVE",
                start=True,
            ),
            metadata=(("x-api-key", API_KEY),),
            timeout=30,
        )


async def _pipeline(
    stack: _Stack, symbol: str, every: int, count: int
) -> tuple[list[float], int, float]:
    """Latencies (ms) of the orders made by `count` bars at `RATE_PER_S`, the fills, and the
    fills per second from the first bar to the last fill."""
    from virtufin.bus.nats import NatsBus

    started: dict[str, float] = {}
    latencies: list[float] = []
    fills = 0
    last_fill = 0.0
    done = asyncio.Event()

    async def on_fill(envelope: Envelope, delivery: Any) -> None:
        nonlocal fills, last_fill
        fills += 1
        last_fill = time.perf_counter()
        begun = started.pop(envelope.correlationid or "", None)
        if begun is not None:
            latencies.append((time.perf_counter() - begun) * 1000)
        if fills >= count // every:
            done.set()

    publisher = await NatsBus.connect(url=stack.nats_url, name="bench-marketdata")
    observer = await NatsBus.connect(url=stack.nats_url, name="bench-observer")
    try:
        await observer.subscribe("sc.LIVE.trading.order.filled", on_fill)
        warm = await _bars(publisher, started, symbol, 50, 0, record=False)  # warm up
        await asyncio.sleep(1.0)
        # As the services do once started: the start-up heap (modules, clients) out of GC
        # passes, whose full collections would otherwise stall this process for ~15 ms.
        gc.collect()
        gc.freeze()
        fills, latencies[:] = 0, []
        done.clear()
        first_bar = time.perf_counter()
        await _bars(publisher, started, symbol, count, warm, record=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 30)
        return latencies, fills, fills / max(last_fill - first_bar, 1e-9)
    finally:
        await observer.close()
        await publisher.close()


async def _bars(
    bus: Any, started: dict[str, float], symbol: str, count: int, first: int, *, record: bool
) -> int:
    period = 1.0 / RATE_PER_S
    begin = time.perf_counter()
    for i in range(count):
        due = begin + i * period
        pause = due - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        n = first + i
        price = 100.0 + (n % 10)
        envelope = Envelope.new(
            type=EventTypes.market("bench", "ohlcv", "candle"),
            source="urn:com.virtufin.marketdata",
            data={
                "symbol": symbol,
                "interval": "1s",
                "open": price,
                "high": price,
                "low": price,
                "close": price,
                "volume": 1.0,
                "candle_close_time": f"2024-01-01T00:00:00.{n:06d}Z" if n < 10**6 else None,
            },
            clocktype="wall",
            marketlane="act",
        )
        if record:
            started[envelope.id] = time.perf_counter()
        await bus.publish(BAR_PREFIX + symbol, envelope)
    return first + count


async def _baseline(url: str, count: int) -> list[float]:
    """Raw nats-py request/reply round trips (ms) at the same rate."""
    import nats

    responder = await nats.connect(url)
    requester = await nats.connect(url)
    try:

        async def echo(msg: Any) -> None:
            await msg.respond(msg.data)

        await responder.subscribe("bench.live.echo", cb=echo)
        await responder.flush()
        out: list[float] = []
        period = 1.0 / RATE_PER_S
        begin = time.perf_counter()
        for i in range(count + 50):
            pause = begin + i * period - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            sent = time.perf_counter()
            await requester.request("bench.live.echo", b"x" * 300, timeout=5)
            if i >= 50:
                out.append((time.perf_counter() - sent) * 1000)
        return out
    finally:
        await requester.close()
        await responder.close()


async def _run(quick: bool) -> list[dict[str, Any]]:
    count = 1_000 if quick else 5_000
    results = []
    with tempfile.TemporaryDirectory(prefix="virtufin-live-bench-") as folder:
        stack = _Stack(Path(folder))
        try:
            stack.start()
            await stack.wait_serving()
            for label, symbol, every in LOADS:
                await _create_worker(stack, symbol, every)
                latencies, fills, rate = await _pipeline(stack, symbol, every, count)
                if not latencies:
                    raise RuntimeError(f"no fill arrived ({label}): the pipeline is broken")
                results.append((label, every, latencies, fills / (count // every), rate))
            baseline = await _baseline(stack.nats_url, count)
        finally:
            stack.stop()
    b50, b99 = statistics.median(baseline), _percentile(baseline, 0.99)
    rows = []
    for label, every, latencies, completeness, rate in results:
        p50, p99 = statistics.median(latencies), _percentile(latencies, 0.99)
        rows.append(
            _row(f"live.bar→fill latency p50 ({label})", p50, "ms", "nats request/reply p50", b50)
        )
        if every > 1:
            rows.append(
                _row(
                    f"live.bar→fill latency p99 ({label})", p99, "ms", "nats request/reply p99", b99
                )
            )
        else:
            offered = RATE_PER_S / every
            rows.append(
                _row(
                    f"live.fills/s sustained ({label})",
                    rate,
                    "fills/s",
                    "orders/s offered",
                    offered,
                )
            )
        rows.append(
            _row(f"live.fills per order ({label})", completeness, "fills/order", "orders", 1)
        )
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure the live pipeline beside its baseline; rows as `bench/__main__.py` expects.

    On the services' event loop (uvloop when installed, `virtufin.eventloop`): this process
    stands in for the marketdata connector, a service.
    """
    return eventloop.run(_run(quick))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live_bench")
    parser.add_argument("--quick", action="store_true", help="1 000 bars instead of 5 000")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    print(f"{'measurement':36} {'value':>8} {'unit':9} {'baseline':24} {'value':>8} ratio target")
    for row in run(quick=args.quick):
        print(
            f"{row['name']:36} {row['value']:>8.3g} {row['unit']:9} {row['baseline_name']:24} "
            f"{row['baseline_value']:>8.3g} {row['ratio']:5.2f} {row['target']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
