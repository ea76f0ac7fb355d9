"""Helpers of the live-service tests: datasets and a cluster of service processes (launched
by `harness`, which also runs the private NATS servers).

Everything runs on real processes and a real broker: each test cluster gets its own
``nats-server -js`` on a free port (so durable consumers and streams never meet those of
other test runs), its own ``services.json`` with free ports and one SQLite state file shared
by its processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from harness.services import REPO, ServiceProcess, services_json

from virtufin.ports import free_port

API_KEY = "live-test-key"
BAR_SCHEMA = pa.schema(
    [
        ("ts", pa.timestamp("us", tz="UTC")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("symbol", pa.string()),
        ("interval", pa.string()),
    ]
)


# --------------------------------------------------------------------------- data


def zigzag(*legs: tuple[int, float], start: float = 100.0) -> list[float]:
    """Closes moving `step` per bar for `bars` bars, leg after leg: ``zigzag((12, -1), …)``."""
    out, price = [], start
    for bars, step in legs:
        for _ in range(bars):
            price += step
            out.append(round(price, 4))
    return out


def write_daily_bars(
    root: Path, selector: str, symbol: str, closes: Sequence[float], *, first: date
) -> list[date]:
    """One Parquet file per date partition (hive layout), daily bars; returns the dates."""
    days = []
    for i, close in enumerate(closes):
        day = first + timedelta(days=i)
        opened = closes[i - 1] if i else close
        ts = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        table = pa.table(
            {
                "ts": [ts],
                "open": [float(opened)],
                "high": [float(max(opened, close)) + 0.5],
                "low": [float(min(opened, close)) - 0.5],
                "close": [float(close)],
                "volume": [1000.0 + i],
                "symbol": [symbol],
                "interval": ["1d"],
            },
            schema=BAR_SCHEMA,
        )
        folder = root / f"selector={selector}" / f"symbol={symbol}" / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / "part-0.parquet", compression="zstd")
        days.append(day)
    return days


# --------------------------------------------------------------------------- services


class Cluster:
    """Services of one test on a private NATS server, sharing a SQLite state file."""

    def __init__(self, root: Path, nats_url: str, names: Sequence[str], **env: str) -> None:
        self.root = root
        self.ports = {name: free_port() for name in names}
        self.services_path = services_json(root / "services.json", self.ports)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("VIRTUFIN_")},
            "PYTHONPATH": str(REPO),
            "VIRTUFIN_BUS": "nats",
            "VIRTUFIN_NATS_URL": nats_url,
            "VIRTUFIN_STATE": "sqlite",
            "VIRTUFIN_STATE_DIR": str(root / "state"),
            "VIRTUFIN_API_KEYS": API_KEY,
            "VIRTUFIN_CODE_ROOTS": str(REPO),
            "VIRTUFIN_HOME": str(REPO),
            "VIRTUFIN_LOG_LEVEL": "INFO",
            "VIRTUFIN_HEARTBEAT_SECONDS": "2",
            **env,
        }
        self.processes: list[ServiceProcess] = []

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def start(self, name: str, *, label: str | None = None, **env: str) -> ServiceProcess:
        service = ServiceProcess(
            name,
            grpc_port=self.ports[name],
            services=self.services_path,
            env={**self.env, **env},
            log_path=self.root / f"{label or name}.log",
        )
        self.processes.append(service)
        return service.start()

    def stop_all(self) -> None:
        for service in reversed(self.processes):
            service.stop()


async def eventually(
    check: Callable[[], Any], what: str, *, within_s: float = 20.0, every: float = 0.05
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(every)
