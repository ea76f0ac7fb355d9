"""Resources shared by every domain, and the one switch that picks a resource set.

`resources_for(settings)` maps ``VIRTUFIN_DEPLOYMENT`` (``local`` by default) to resources:

- `state`: SQLite under ``<state_dir>`` (production: `Settings.state`, e.g. PostgreSQL with
  the DSN from ``VIRTUFIN_POSTGRES_DSN`` as an `EnvVar`);
- `storage`: ``<state_dir>/data`` and ``<state_dir>/results`` (production: a shared volume);
- `market_data`: `SyntheticSource`, selector ``SYNTH_DAILY`` (production: `DropFolderSource`
  at ``VIRTUFIN_DROP_FOLDER``);
- `bus`: `Settings.bus`, by default this process's in-process bus (production: NATS, URL from
  ``VIRTUFIN_NATS_URL``);
- `workmanager`: `InProcessWorkManagerClient`, desired deployments in the state store
  (production: `GatewayWorkManagerClient`, which drives the WorkManager through the gateway).

``VIRTUFIN_MARKETDATA_SOURCE`` (`synthetic`, `drop_folder`, `recorded`) overrides the source.
Assets never branch on the deployment: they depend on the resource types only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import dagster as dg
from pydantic import Field

from virtufin.bus.memory import MemoryBus
from virtufin.config import Settings, load_services, load_settings
from virtufin.envelope import Envelope
from virtufin.errors import ConfigError
from virtufin.state.memory import MemoryStateStore
from virtufin.state.port import StateStore

__all__ = [
    "MARKETDATA_SOURCE_ENV",
    "EventBusResource",
    "StateStoreResource",
    "StorageResource",
    "process_bus",
    "resources_for",
    "run_sync",
]

MARKETDATA_SOURCE_ENV: Final = "VIRTUFIN_MARKETDATA_SOURCE"
T = TypeVar("T")
_PROCESS_BUS: MemoryBus | None = None
_PROCESS_STATE: MemoryStateStore | None = None


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync Dagster code, inside or outside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def process_bus() -> MemoryBus:
    """The in-process bus of this process (embedded mode): subscribe to it to watch events."""
    global _PROCESS_BUS
    if _PROCESS_BUS is None:
        _PROCESS_BUS = MemoryBus()
    return _PROCESS_BUS


class StateStoreResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """The Virtufin state store: scenario registry, backtest specs, promotion log, deployments.

    Usage: ``StateStoreResource(kind="sqlite", state_dir="/tmp/x").run(lambda s: s.keys())``.
    """

    kind: str = Field(
        default="sqlite", description="memory, sqlite, postgres, redis or dapr (Settings.state)"
    )
    state_dir: str = Field(description="embedded state folder; SQLite lives in state.sqlite3")
    postgres_dsn: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        description="PostgreSQL DSN when kind=postgres (production: EnvVar)",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0", description="Redis URL when kind=redis"
    )
    state_store_name: str = Field(
        default="statestore", description="Dapr state component when kind=dapr"
    )

    def settings(self) -> Settings:
        """The `Settings` this resource stands for (state fields only)."""
        return Settings.model_validate(
            {
                "state": self.kind,
                "state_dir": Path(self.state_dir),
                "postgres_dsn": self.postgres_dsn,
                "redis_url": self.redis_url,
                "state_store_name": self.state_store_name,
            }
        )

    async def open(self) -> StateStore:
        """A connected store; close it when done (the memory kind is shared per process)."""
        if self.kind == "memory":
            global _PROCESS_STATE
            if _PROCESS_STATE is None:
                _PROCESS_STATE = MemoryStateStore()
            return _PROCESS_STATE
        from virtufin.state.factory import create_state

        return await create_state(self.settings())

    def run(self, fn: Callable[[StateStore], Awaitable[T]]) -> T:
        """Open the store, await `fn(store)`, close the store; from sync code."""

        async def main() -> T:
            store = await self.open()
            try:
                return await fn(store)
            finally:
                if self.kind != "memory":
                    await store.close()

        return run_sync(main())


class StorageResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where files go: the bar dataset and backtest results."""

    data_root: str = Field(description="root of the hive-partitioned bar dataset")
    results_root: str = Field(description="backtest results: <results_root>/<scenario>/<run_id>/")

    def results_dir(self, scenario_id: str, run_id: str) -> Path:
        return Path(self.results_root) / scenario_id / run_id


class EventBusResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Publishes events (promotion audit) on the bus `Settings.bus` names."""

    kind: str = Field(default="memory", description="memory (this process), nats or dapr")
    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS server")
    pubsub_name: str = Field(default="pubsub", description="Dapr pub/sub component")

    def publish(self, topic: str, envelope: Envelope) -> None:
        """Publish one event; the memory kind delivers to `process_bus()` subscribers."""
        if self.kind == "memory":
            process_bus().publish_sync(topic, envelope)
            return

        async def remote() -> None:
            from virtufin.bus.factory import create_bus

            settings = Settings.model_validate(
                {"bus": self.kind, "nats_url": self.nats_url, "pubsub_name": self.pubsub_name}
            )
            bus = await create_bus(settings, name="virtufin-pipelines")
            try:
                await bus.publish(topic, envelope)
            finally:
                await bus.close()

        run_sync(remote())


def _market_data(settings: Settings, env: Mapping[str, str]) -> Any:
    from pipelines.ingestion.resources import DropFolderSource, RecordedSource, SyntheticSource

    default = "drop_folder" if settings.deployment == "production" else "synthetic"
    kind = env.get(MARKETDATA_SOURCE_ENV) or default
    selector = env.get("VIRTUFIN_SELECTOR")
    extra: dict[str, Any] = {"selector": selector} if selector else {}
    if kind == "synthetic":
        return SyntheticSource(**extra)
    if kind == "drop_folder":
        folder = env.get("VIRTUFIN_DROP_FOLDER")
        if settings.deployment == "production":
            return DropFolderSource(folder=dg.EnvVar("VIRTUFIN_DROP_FOLDER"), **extra)
        return DropFolderSource(folder=folder or str(settings.state_dir / "drop"), **extra)
    if kind == "recorded":
        root = env.get("VIRTUFIN_RECORDED_ROOT") or str(settings.state_dir / "recorded")
        if env.get("VIRTUFIN_RECORDED_SELECTOR"):
            extra["recorded_selector"] = env["VIRTUFIN_RECORDED_SELECTOR"]
        return RecordedSource(root=root, **extra)
    raise ConfigError(
        "environment", MARKETDATA_SOURCE_ENV, f"{kind!r} is not synthetic, drop_folder or recorded"
    )


def resources_for(
    settings: Settings | None = None, *, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The resource set of ``settings.deployment`` (default: `load_settings()`).

    Raises:
        ConfigError: an unknown market-data source kind.
    """
    from pipelines.promotion.resources import GatewayWorkManagerClient, InProcessWorkManagerClient

    env = os.environ if env is None else env
    settings = settings or load_settings(env=env)
    state_dir = settings.state_dir
    storage = StorageResource(
        data_root=str(state_dir / "data"), results_root=str(state_dir / "results")
    )
    if settings.deployment == "production":
        gateway = load_services().get("gateway").grpc.address
        return {
            "state": StateStoreResource(
                kind=settings.state,
                state_dir=str(state_dir),
                postgres_dsn=dg.EnvVar("VIRTUFIN_POSTGRES_DSN"),
                redis_url=settings.redis_url,
                state_store_name=settings.state_store_name,
            ),
            "storage": storage,
            "market_data": _market_data(settings, env),
            "bus": EventBusResource(
                kind=settings.bus,
                nats_url=dg.EnvVar("VIRTUFIN_NATS_URL"),
                pubsub_name=settings.pubsub_name,
            ),
            "workmanager": GatewayWorkManagerClient(
                gateway_address=gateway, api_key=dg.EnvVar("VIRTUFIN_API_KEY")
            ),
        }
    state = StateStoreResource(
        kind=settings.state,
        state_dir=str(state_dir),
        postgres_dsn=settings.postgres_dsn,
        redis_url=settings.redis_url,
        state_store_name=settings.state_store_name,
    )
    return {
        "state": state,
        "storage": storage,
        "market_data": _market_data(settings, env),
        "bus": EventBusResource(
            kind=settings.bus, nats_url=settings.nats_url, pubsub_name=settings.pubsub_name
        ),
        "workmanager": InProcessWorkManagerClient(state=state),
    }
