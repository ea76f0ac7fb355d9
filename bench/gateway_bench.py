"""Gateway benchmark: what routing through the gateway costs beside calling the backend directly.

- Unary throughput: ``Gateway.InvokeJson`` (client → gateway: auth and request interceptors,
  JSON → protobuf with the reflected schema, retry/breaker bookkeeping → backend and back)
  against the same call made straight to the backend, a bare grpc.aio echo server (no
  interceptors), in the same run with the same client, 32 calls in flight; the two paths
  alternate in short rounds and each reports its median round.
- Unary latency p50/p99: the same two paths, one call at a time.
- The ceiling of any proxy here: the same direct call relayed by a pass-through grpc.aio
  proxy (raw bytes forwarded on one channel, nothing decoded, no auth), measured in the same
  rounds. A second hop costs the client, the proxy and the backend CPU on the same shared
  cores, so this ratio bounds what a gateway written on grpc.aio can reach on this machine;
  the gateway's own cost is its throughput beside the proxy's.
- ``Gateway.Subscribe`` fan-out: one event published through ``Pubsub.PublishEvent`` reaching
  50 open streams (deliveries per second), against the same events reaching one stream.

The gateway runs as ``python -m virtufin.cli.serve gateway`` on the in-process bus and state
(no servers needed); the echo backend runs as ``python -m bench.gateway_bench --echo-server``.
``target`` is the acceptable ratio: ``≥ x`` for rates, ``≤ x`` for times.

Run: ``python -m bench.gateway_bench [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import grpc

from bench.rows import bench_row
from virtufin.eventloop import run as run_loop
from virtufin.ports import free_port
from virtufin.proto import ensure_built

ensure_built()
from virtufin.proto.gen import common_pb2, gateway_pb2, gateway_pb2_grpc  # noqa: E402

__all__ = ["TARGETS", "run"]

REPO: Final = Path(__file__).resolve().parent.parent
API_KEY: Final = "bench-key"
IN_FLIGHT: Final = 32
STREAMS: Final = 50
TOPIC: Final = "bench.infra.fanout"
#: Acceptable ratio per row (see the module docstring for the direction).
TARGETS: Final[dict[str, str]] = {
    "gateway.invoke_json.throughput": "≥ 0.6",
    "gateway.passthrough_proxy.throughput": "report (ceiling for any grpc.aio proxy)",
    "gateway.invoke_json.throughput vs the pass-through proxy": "report",
    "gateway.invoke_json.latency p50": "≤ 3",
    "gateway.invoke_json.latency p99": "≤ 4",
    "gateway.subscribe.fanout 50 streams": "≥ 1",
}


def _row(name: str, value: float, unit: str, baseline_name: str, baseline: float) -> dict[str, Any]:
    return bench_row(name, value, unit, baseline_name, baseline, TARGETS[name])


# --------------------------------------------------------------------------- the echo backend


class _Echo(gateway_pb2_grpc.ConfigServicer):  # type: ignore[misc]
    """``virtufin.Config/GetService`` answering with the name it was asked for."""

    async def GetService(
        self, request: gateway_pb2.GetServiceRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetServiceResponse:
        return gateway_pb2.GetServiceResponse(
            service=gateway_pb2.ServiceEntry(name=request.name, grpc_port=1)
        )


async def _echo_server(port: int) -> None:
    from grpc_health.v1 import health, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    server = grpc.aio.server()
    gateway_pb2_grpc.add_ConfigServicer_to_server(_Echo(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    name = gateway_pb2.DESCRIPTOR.services_by_name["Config"].full_name
    reflection.enable_server_reflection([name, reflection.SERVICE_NAME], server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


class _PassThrough(grpc.GenericRpcHandler):
    """Every unary method relayed to one backend as raw bytes: the least a proxy can do."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = details.method
        handler = self._handlers.get(method)
        if handler is None:
            call = self._channel.unary_unary(method)  # no serializers: bytes in, bytes out

            async def relay(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                reply: bytes = await call(request)
                return reply

            handler = self._handlers[method] = grpc.unary_unary_rpc_method_handler(relay)
        return handler


async def _proxy_server(port: int, backend: str) -> None:
    async with grpc.aio.insecure_channel(backend) as channel:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_PassThrough(channel),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()


# --------------------------------------------------------------------------- processes


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def _wait_ready(
    address: str, check: Callable[[grpc.aio.Channel], Awaitable[Any]], log: Path
) -> None:
    deadline = time.monotonic() + 30
    async with grpc.aio.insecure_channel(address) as channel:
        while True:
            try:
                await check(channel)
                return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-2000:]
                    raise RuntimeError(
                        f"{address} did not come up; its log ends:\n{tail}"
                    ) from None
                await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- measurements


async def _throughput(call: Callable[[], Awaitable[Any]], seconds: float) -> float:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return done / (time.perf_counter() - started)


async def _latencies(call: Callable[[], Awaitable[Any]], count: int) -> tuple[float, float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[98]


async def _fanout(stub: Any, pubsub: Any, streams: int, events: int) -> float:
    """Deliveries per second of `events` published once each, reaching `streams` streams."""
    metadata = (("x-api-key", API_KEY),)
    calls = [
        stub.Subscribe(gateway_pb2.SubscribeRequest(topics=[TOPIC]), metadata=metadata)
        for _ in range(streams)
    ]
    for call in calls:
        await call.initial_metadata()  # the stream's bus subscription is live

    async def drain(call: Any) -> None:
        got = 0
        async for _ in call:
            got += 1
            if got == events:
                return

    readers = [asyncio.create_task(drain(call)) for call in calls]
    started = time.perf_counter()
    window = asyncio.Semaphore(IN_FLIGHT)

    async def publish(index: int) -> None:
        async with window:
            await pubsub.PublishEvent(
                gateway_pb2.PublishEventRequest(
                    topic=TOPIC,
                    cloudevent=common_pb2.CloudEvent(
                        id=f"{streams}-{index}-{time.time_ns()}",
                        source="urn:com.virtufin.bench",
                        type="com.virtufin.bench.infra.tick",
                        text_data=json.dumps({"i": index}),
                    ),
                ),
                metadata=metadata,
            )

    await asyncio.gather(*(publish(i) for i in range(events)))
    await asyncio.wait_for(asyncio.gather(*readers), 120)
    elapsed = time.perf_counter() - started
    for call in calls:
        call.cancel()
    return streams * events / elapsed


async def _run(quick: bool) -> list[dict[str, Any]]:
    seconds, rounds = (3.0, 6) if quick else (10.0, 10)
    samples = 300 if quick else 2000
    events = 200 if quick else 1000
    echo_port, gateway_port, proxy_port = free_port(), free_port(), free_port()
    folder = Path(tempfile.mkdtemp(prefix="virtufin-gateway-bench-"))
    services = folder / "services.json"
    services.write_text(
        json.dumps(
            {
                "services": [
                    {
                        "name": "gateway",
                        "daprAppId": "virtufin-gateway",
                        "module": "services.gateway",
                        "role": "gateway",
                        "grpc": {"host": "127.0.0.1", "port": gateway_port},
                    },
                    {
                        "name": "echo",
                        "daprAppId": "virtufin-echo",
                        "module": "bench.gateway_bench",
                        "grpc": {"host": "127.0.0.1", "port": echo_port},
                    },
                ]
            }
        )
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("VIRTUFIN_")},
        "PYTHONPATH": str(REPO),
        "VIRTUFIN_BUS": "memory",
        "VIRTUFIN_STATE": "memory",
        "VIRTUFIN_API_KEYS": API_KEY,
        "VIRTUFIN_LOG_LEVEL": "WARNING",
        "VIRTUFIN_STATE_DIR": str(folder / "state"),
    }
    echo_log, gateway_log = folder / "echo.log", folder / "gateway.log"
    proxy_log = folder / "proxy.log"
    processes = [
        _spawn(["bench.gateway_bench", "--echo-server", str(echo_port)], env, echo_log),
        _spawn(
            ["bench.gateway_bench", "--proxy-server", str(proxy_port), f"127.0.0.1:{echo_port}"],
            env,
            proxy_log,
        ),
        _spawn(
            ["virtufin.cli.serve", "gateway", "--services", str(services), "--health-port", "-1"],
            env,
            gateway_log,
        ),
    ]
    metadata = (("x-api-key", API_KEY),)
    echo_request = gateway_pb2.GetServiceRequest(name="bench")
    json_request = gateway_pb2.InvokeJsonRequest(
        service="echo", method="GetService", request_data='{"name": "bench"}'
    )
    try:
        echo_address, gateway_address = f"127.0.0.1:{echo_port}", f"127.0.0.1:{gateway_port}"
        proxy_address = f"127.0.0.1:{proxy_port}"
        await _wait_ready(
            echo_address,
            lambda ch: gateway_pb2_grpc.ConfigStub(ch).GetService(echo_request),
            echo_log,
        )
        await _wait_ready(
            proxy_address,
            lambda ch: gateway_pb2_grpc.ConfigStub(ch).GetService(echo_request),
            proxy_log,
        )
        await _wait_ready(
            gateway_address,
            lambda ch: gateway_pb2_grpc.ConfigStub(ch).ListServices(
                gateway_pb2.ConfigListServicesRequest(), metadata=metadata
            ),
            gateway_log,
        )
        async with (
            grpc.aio.insecure_channel(echo_address) as echo_channel,
            grpc.aio.insecure_channel(gateway_address) as gateway_channel,
            grpc.aio.insecure_channel(proxy_address) as proxy_channel,
        ):
            echo = gateway_pb2_grpc.ConfigStub(echo_channel)
            proxy = gateway_pb2_grpc.ConfigStub(proxy_channel)
            gateway = gateway_pb2_grpc.GatewayStub(gateway_channel)

            async def bare() -> None:
                await echo.GetService(echo_request)

            async def proxied() -> None:
                await proxy.GetService(echo_request)

            async def routed() -> None:
                reply = await gateway.InvokeJson(json_request, metadata=metadata)
                if not reply.success:
                    raise RuntimeError(f"InvokeJson failed: {reply.status} {reply.message}")

            for call in (bare, proxied, routed):  # warm up: connections, reflection cache
                for _ in range(200):
                    await call()
            # Alternate short rounds, so that load from elsewhere hits every path alike.
            bare_runs, proxied_runs, routed_runs = [], [], []
            for _ in range(rounds):
                bare_runs.append(await _throughput(bare, seconds / rounds))
                proxied_runs.append(await _throughput(proxied, seconds / rounds))
                routed_runs.append(await _throughput(routed, seconds / rounds))
            bare_rps = statistics.median(bare_runs)
            proxied_rps = statistics.median(proxied_runs)
            routed_rps = statistics.median(routed_runs)
            bare_p50, bare_p99 = await _latencies(bare, samples)
            routed_p50, routed_p99 = await _latencies(routed, samples)
            pubsub = gateway_pb2_grpc.PubsubStub(gateway_channel)
            await _fanout(gateway, pubsub, 1, 20)  # warm up the hub
            single = await _fanout(gateway, pubsub, 1, events)
            many = await _fanout(gateway, pubsub, STREAMS, events)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    direct = "direct call to a bare grpc.aio server"
    return [
        _row("gateway.invoke_json.throughput", routed_rps, "calls/s", direct, bare_rps),
        _row("gateway.passthrough_proxy.throughput", proxied_rps, "calls/s", direct, bare_rps),
        _row(
            "gateway.invoke_json.throughput vs the pass-through proxy",
            routed_rps,
            "calls/s",
            "the same call through the pass-through proxy",
            proxied_rps,
        ),
        _row("gateway.invoke_json.latency p50", routed_p50, "ms", direct, bare_p50),
        _row("gateway.invoke_json.latency p99", routed_p99, "ms", direct, bare_p99),
        _row(
            "gateway.subscribe.fanout 50 streams",
            many,
            "deliveries/s",
            "the same events to 1 stream",
            single,
        ),
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Measure; see the module docstring."""
    return asyncio.run(_run(quick))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--proxy-server", nargs=2, metavar=("PORT", "BACKEND"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.echo_server is not None:
        asyncio.run(_echo_server(args.echo_server))
        return 0
    if args.proxy_server is not None:  # on the gateway's event loop
        run_loop(_proxy_server(int(args.proxy_server[0]), args.proxy_server[1]))
        return 0
    for row in run(quick=args.quick):
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        print(
            f"{row['name']:<40} {row['value']:>12,.2f} {row['unit']:<13} "
            f"baseline {row['baseline_value']:>12,.2f}  ratio {ratio:>6}  target {row['target']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
