"""The main job's live stage: gateway, workmanager, marketdata and execution in this process;
the promoted strategy trades ``sc.LIVE`` on a high-speed replay of the dataset's act lanes.

Everything goes through the public surfaces a user would use: the worker is created through
the gateway with the Python client, the replay is started with MarketData.StartReplay, and
orders and fills are read off the gateway's Subscribe stream.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from virtufin import topics
from virtufin.config import Settings, load_services, project_root
from virtufin.ports import free_port

__all__ = ["LIVE_SERVICES", "run_live_stage"]

LIVE_SERVICES: Final = ("gateway", "workmanager", "marketdata", "execution")
_REPLAY_VENUE: Final = "replay"
_START_TIMEOUT_S: Final = 60.0


def _services_file(folder: Path) -> Path:
    """The project's catalogue with free ports, so the stage never collides with `up`."""
    catalogue = load_services().model_dump(mode="json", by_alias=True)
    for entry in catalogue["services"]:
        entry["grpc"]["port"] = free_port()
        entry["grpc"]["hosts"] = []
        entry["healthPort"] = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "services.json"
    path.write_text(json.dumps(catalogue, indent=1))
    return path


async def run_live_stage(
    *,
    settings: Settings,
    params: dict[str, Any],
    symbol: str,
    data_root: Path,
    selector: str,
    seconds: float = 5.0,
    progress: Callable[[float, float], None] | None = None,
) -> dict[str, Any]:
    """Run the live services, trade `symbol` with `sma_cross(params)` on sc.LIVE, stop.

    Returns:
        ``{"worker", "params", "symbol", "seconds", "bars", "orders", "fills", "events"}``.
    """
    from services.bootstrap import load_serve_config
    from virtufin.cli.inprocess import services_in_process
    from virtufin.client import AsyncClient

    key = secrets.token_hex(16)
    path = _services_file(settings.state_dir / "run")
    flags = {
        "services": str(path),
        "bus": settings.bus,
        "state": settings.state,
        "state_dir": str(settings.state_dir),
        "nats_url": settings.nats_url,
        "api_keys": (key,),
    }
    configs = [load_serve_config(name, flags=flags) for name in LIVE_SERVICES]
    worker_id = f"sma-cross-live-{uuid.uuid4().hex[:8]}"
    tick = progress or (lambda done, total: None)
    started = time.monotonic()
    async with services_in_process(configs, share_memory_bus=settings.bus == "memory") as running:
        problem = await running.wait_healthy(time.monotonic() + _START_TIMEOUT_S)
        if problem is not None:
            raise RuntimeError(f"live services did not start: {problem}")
        async with AsyncClient(running.addresses["gateway"], api_key=key) as client:
            stream = await client.gateway.subscribe(topics=["sc.LIVE.trading.>"])
            events: list[Any] = []

            async def collect() -> None:
                async for event in stream:
                    events.append(event)

            collector = asyncio.create_task(collect())
            await client.gateway.workmanager.CreateWorker(
                {
                    "id": worker_id,
                    "code_source": {"url": str(project_root() / "workers/sma_cross/manifest.json")},
                    "topic": topics.bar(_REPLAY_VENUE, symbol),
                    "group": worker_id,
                    "parameters_json": json.dumps(params),
                    "scenario_id": "LIVE",
                    "start": True,
                }
            )
            try:
                replay = await client.gateway.marketdata.StartReplay(
                    {
                        "dataset_path": str(data_root),
                        "selector": selector,
                        "symbols": [symbol],
                        "speed": 0,
                    }
                )
                bars = 0
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    tick(time.monotonic() - started, seconds)
                    await asyncio.sleep(0.25)
                    listed = (await client.gateway.marketdata.ListReplays())["replays"]
                    mine = next(r for r in listed if r["id"] == replay["id"])
                    bars = int(mine.get("events_published", 0))
                    if mine["status"] == "REPLAY_STATUS_FAILED":
                        raise RuntimeError(f"the replay failed: {mine}")
                tick(seconds, seconds)
            finally:
                await client.gateway.workmanager.StopWorker({"id": worker_id})
                await client.gateway.workmanager.DeleteWorker({"id": worker_id})
                await stream.aclose()
                collector.cancel()
    rows = []
    for event in events:
        env = event.envelope
        data = env.data if isinstance(env.data, dict) else {}
        rows.append(
            {
                "time": (env.eventtime or env.time).isoformat()
                if (env.eventtime or env.time)
                else None,
                "event": env.type.rsplit(".", 1)[-1],
                "topic": event.topic,
                "scenarioid": env.scenarioid,
                "side": data.get("side"),
                "qty": data.get("qty_filled", data.get("qty")),
                "price": data.get("price"),
            }
        )
    return {
        "worker": worker_id,
        "params": params,
        "symbol": symbol,
        "seconds": round(time.monotonic() - started, 2),
        "bars": bars,
        "orders": sum(r["event"] == "submitted" for r in rows),
        "fills": sum(r["event"] == "filled" for r in rows),
        "events": rows,
    }
