"""The WorkManager: hosts workers (chosen by MIME type) and routes lane events to them.

Built on the worker runtime (`virtufin.runtime.Supervisor`): ``virtufin.WorkManager``'s RPCs
write the worker's record in the state store (``workmanager.worker.<id>`` +
``workmanager.worker.index``), and the replica that runs the worker applies it. Replicas hear
each other's writes on ``state-changes``. On start, the replica holding the recovery lease
(``workmanager.recovery.leader``) restarts every worker meant to run, while health reports
NOT_SERVING. Replicas running the same worker compete for its events (one durable consumer per
worker group). A stateful worker's snapshot (``workmanager.snapshot.<id>``) is saved after each
input that changed it, so a recovered worker resumes where it left off; DeleteWorker removes it.

Native workers' ``gateway_call`` reaches the API gateway through a `GatewayBridge`
(``Gateway.InvokeJson``, as the Python client calls it): the gateway is
``$VIRTUFIN_API_HOST:$VIRTUFIN_API_GRPC_PORT`` when either is set, else the ``services.json``
entry with role ``gateway``; the key sent is ``$VIRTUFIN_API_KEY``, else the first of this
service's own keys.

Environment (besides the bootstrap's): ``VIRTUFIN_REPLICA_ID`` (default
``<hostname>:<grpc port>``), ``WORKER_RECOVERY_ON_START`` (default ``true``),
``WORKER_RECOVERY_LEASE_TTL_SECONDS`` (300), ``VIRTUFIN_HEARTBEAT_SECONDS`` (10),
``VIRTUFIN_CODE_ROOTS``, ``ALLOWED_CODE_SOURCE_HOSTS``,
``VIRTUFIN_GATEWAY_CALL_TIMEOUT_SECONDS`` (10, one native ``gateway_call``),
``VIRTUFIN_ORDERED_WORKERS`` (``stateful``: which workers get ordered subscriptions, one event
in flight per worker group so that a redelivery comes before anything newer; ``always``,
``never``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import socket
from typing import Any

from services.bootstrap.context import ServiceContext
from services.workmanager.code import CodePolicy
from services.workmanager.host import WorkerHost
from services.workmanager.lease import DEFAULT_LEASE_TTL_SECONDS, RecoveryLease
from services.workmanager.records import RECORD_KEY_PREFIX, WorkerRecords
from services.workmanager.recovery import Recovery
from services.workmanager.servicer import WorkManagerServicer
from services.workmanager.telemetry import WorkManagerCollector
from virtufin import statekeys, topics
from virtufin.bus.port import Delivery
from virtufin.bus.validation import LaneValidator
from virtufin.client import DEFAULT_GATEWAY_CALL_TIMEOUT_SECONDS, GatewayBridge, default_target
from virtufin.config import load_versions
from virtufin.envelope import Envelope
from virtufin.errors import ConfigError
from virtufin.proto import ensure_built
from virtufin.runtime.supervisor import Supervisor, SupervisorConfig
from virtufin.scenarios import ScenarioRegistry
from virtufin.state.observed import ObservedStateStore

ensure_built()
from virtufin.proto.gen import workmanager_pb2, workmanager_pb2_grpc  # noqa: E402

__all__ = ["gateway_bridge", "replica_id", "serve"]


def replica_id(port: int) -> str:
    """``$VIRTUFIN_REPLICA_ID``, else ``<hostname>:<grpc port>`` (stable across restarts)."""
    return os.environ.get("VIRTUFIN_REPLICA_ID") or f"{socket.gethostname()}:{port}"


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def gateway_bridge(ctx: ServiceContext) -> GatewayBridge | None:
    """The bridge native workers' ``gateway_call`` goes through (None: no gateway known)."""
    if os.environ.get("VIRTUFIN_API_HOST") or os.environ.get("VIRTUFIN_API_GRPC_PORT"):
        target = default_target()
    else:
        entry = next((s for s in ctx.services.services if s.role == "gateway"), None)
        if entry is None:
            return None
        target = entry.grpc.address
    keys = ctx.settings.api_keys
    key = os.environ.get("VIRTUFIN_API_KEY") or (keys[0] if keys else "")
    raw_timeout = os.environ.get("VIRTUFIN_GATEWAY_CALL_TIMEOUT_SECONDS")
    timeout = float(raw_timeout) if raw_timeout else DEFAULT_GATEWAY_CALL_TIMEOUT_SECONDS
    return GatewayBridge(target, api_key=key, timeout=timeout)


def _library_version() -> str:
    try:
        return load_versions()["LIBRARY_VERSION"]
    except ConfigError:
        return "0.0.0"


async def serve(ctx: ServiceContext) -> None:
    """Run the WorkManager until shutdown (the `services` serve convention)."""
    state = await ctx.open_state()
    registry = ScenarioRegistry(state)
    await registry.seed_live()
    bus = await ctx.open_bus(validator=LaneValidator(registry))
    replica = replica_id(ctx.port)
    safe_replica = re.sub(r"[^A-Za-z0-9_.-]", "_", replica)
    work_dir = ctx.settings.state_dir / "workmanager"
    heartbeat_s = float(os.environ.get("VIRTUFIN_HEARTBEAT_SECONDS") or 10.0)
    bridge = gateway_bridge(ctx)  # closed after the supervisor (hooks run last first)
    if bridge is not None:

        async def close_bridge() -> None:
            bridge.close()

        ctx.on_shutdown("gateway bridge", close_bridge)
    ordered = (os.environ.get("VIRTUFIN_ORDERED_WORKERS") or "stateful").strip().lower()
    if ordered not in ("stateful", "always", "never"):
        raise ConfigError(
            "environment", "VIRTUFIN_ORDERED_WORKERS", f"stateful, always or never ({ordered!r})"
        )
    supervisor = Supervisor(
        bus,
        config=SupervisorConfig(
            heartbeat_interval_secs=heartbeat_s,
            code_dir=str(work_dir / "reload" / safe_replica),
            ordered=ordered,  # type: ignore[arg-type]  # checked above
        ),
        snapshots=state,  # stateful workers resume after a restart (workers.kit.snapshots)
    )
    ctx.on_shutdown("supervisor", supervisor.close)
    records = WorkerRecords(ObservedStateStore(state, bus.publish, service=ctx.name))
    host = WorkerHost(
        supervisor,
        records,
        replica=replica,
        policy=CodePolicy.from_env(work_dir / "code"),
        gateway=bridge,
    )
    ttl = float(os.environ.get("WORKER_RECOVERY_LEASE_TTL_SECONDS") or DEFAULT_LEASE_TTL_SECONDS)
    lease = RecoveryLease(state, holder=replica, ttl_seconds=ttl)
    ctx.on_shutdown("recovery lease", lease.release)
    recovery = Recovery(host, records, lease)
    ctx.add_servicer(
        workmanager_pb2_grpc.add_WorkManagerServicer_to_server,
        WorkManagerServicer(
            host=host, records=records, recovery=recovery, library_version=_library_version()
        ),
        workmanager_pb2.DESCRIPTOR.services_by_name["WorkManager"],
    )
    ctx.metrics.registry.register(WorkManagerCollector(supervisor, recovery))

    async def on_state_change(envelope: Envelope, delivery: Delivery) -> None:
        data: Any = envelope.data
        if not isinstance(data, dict) or data.get("service") != ctx.name:
            return
        key = str(data.get("key", ""))
        if key.startswith(RECORD_KEY_PREFIX) and key != statekeys.WORKER_INDEX:
            await host.converge(key[len(RECORD_KEY_PREFIX) :])

    async def beat() -> None:
        while True:
            await asyncio.sleep(heartbeat_s)
            with contextlib.suppress(Exception):
                await supervisor.heartbeat()
                await host.sync_failures()

    async def startup() -> None:
        # Every replica hears every record write (fan-out, no group).
        subscription = await bus.subscribe(topics.STATE_CHANGES, on_state_change)
        ctx.on_shutdown("state-changes subscription", subscription.unsubscribe)
        if _flag("WORKER_RECOVERY_ON_START", True):
            outcome = await recovery.run()
            ctx.log.info(
                "recovery on start",
                extra={
                    "leader": outcome.leader,
                    "recovered": outcome.recovered,
                    "failed": outcome.failed,
                    "replica": replica,
                },
            )
        task = asyncio.create_task(beat(), name="workmanager:heartbeat")
        # Start-up objects (modules, recovered workers) never die: keep them out of GC passes,
        # which would otherwise scan them on every full collection (pauses on the event path).
        gc.collect()
        gc.freeze()

        async def stop_beat() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        ctx.on_shutdown("heartbeats", stop_beat)

    await ctx.run(startup=startup)
