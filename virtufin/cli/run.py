"""`virtufin run`: the main job on embedded defaults (no servers needed).

Stages so far: validate the configuration, seed the scenario registry, replay a seeded
synthetic bar universe onto a backtest scenario's hyp lanes of the in-process bus, and
report what reached the subscribers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from virtufin import topics
from virtufin.bus import Delivery, LaneValidator, MemoryBus
from virtufin.config import load_services, load_settings, load_versions
from virtufin.envelope import Envelope
from virtufin.scenarios import Scenario, ScenarioRegistry
from virtufin.state import MemoryStateStore

__all__ = ["register"]

_SELECTOR = "SYNTH_DEMO"
_SCENARIO = "RUN_DEMO"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "run", help="run the main job on embedded defaults"
    )
    parser.add_argument("--symbols", default="AAA,BBB,CCC", help="comma-separated symbols")
    parser.add_argument("--days", type=int, default=365, help="bars per symbol (daily)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic universe")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=_run)


def _bars(symbol: str, days: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(f"{seed}:{symbol}")
    price = 100.0
    start = datetime(2024, 1, 1, tzinfo=UTC)
    out = []
    for day in range(days):
        ret = rng.gauss(0.0003, 0.015)
        open_ = price
        close = max(0.01, open_ * math.exp(ret))
        high = max(open_, close) * (1 + abs(rng.gauss(0, 0.004)))
        low = min(open_, close) * (1 - abs(rng.gauss(0, 0.004)))
        ts = start + timedelta(days=day + 1)
        out.append(
            {
                "symbol": symbol,
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "volume": float(rng.randint(1000, 5000)),
                "candle_close_time": ts,
            }
        )
        price = close
    return out


async def _story(args: argparse.Namespace) -> dict[str, Any]:
    services = load_services()
    versions = load_versions()
    settings = load_settings()
    registry = ScenarioRegistry(MemoryStateStore())
    await registry.seed_live()
    await registry.register(Scenario.backtest(_SCENARIO, selector=_SELECTOR, name="run demo"))
    bus = MemoryBus(validator=LaneValidator(registry))

    closes: dict[str, list[float]] = {}
    crossings: dict[str, int] = {}

    def on_bar(event: Envelope, delivery: Delivery) -> None:
        data = event.data
        series = closes.setdefault(data["symbol"], [])
        series.append(data["close"])
        if len(series) > 20:
            fast_now, slow_now = sum(series[-10:]) / 10, sum(series[-20:]) / 20
            fast_before, slow_before = sum(series[-11:-1]) / 10, sum(series[-21:-1]) / 20
            if (fast_before - slow_before) * (fast_now - slow_now) < 0:
                crossings[data["symbol"]] = crossings.get(data["symbol"], 0) + 1

    bus.subscribe_sync(f"hyp.{_SELECTOR}.exchange.>", on_bar)
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    events = []
    for symbol in symbols:
        for bar in _bars(symbol, args.days, args.seed):
            ts = bar.pop("candle_close_time")
            bar["candle_close_time"] = ts.isoformat()
            events.append(
                (
                    ts,
                    topics.bar("synthetic", symbol, selector=_SELECTOR),
                    Envelope.new(
                        type=topics.EventTypes.market("synthetic", "ohlcv", "candle"),
                        source=topics.source_urn("marketdata"),
                        data=bar,
                        time=ts,
                        eventtime=ts,
                        clocktype="historical",
                        marketlane="hyp",
                        marketselector=_SELECTOR,
                        scenarioid=_SCENARIO,
                    ),
                )
            )
    events.sort(key=lambda e: e[0])
    started = time.perf_counter()
    for _, topic, env in events:
        bus.publish_sync(topic, env)
    elapsed = time.perf_counter() - started
    return {
        "services": list(services.names),
        "platform_version": versions["VIRTUFIN_VERSION"],
        "bus": settings.bus,
        "scenarios": [s.id for s in await registry.all()],
        "bars_replayed": len(events),
        "bars_per_second": round(len(events) / elapsed) if elapsed > 0 else None,
        "sma_10_20_crossings": crossings,
    }


def _run(args: argparse.Namespace) -> int:
    result = asyncio.run(_story(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"virtufin {result['platform_version']}: services {', '.join(result['services'])}")
    print(f"scenarios registered: {', '.join(result['scenarios'])}")
    print(
        f"replayed {result['bars_replayed']} bars on the {result['bus']} bus "
        f"({result['bars_per_second']} bars/s)"
    )
    for symbol, count in sorted(result["sma_10_20_crossings"].items()):
        print(f"  {symbol}: {count} SMA(10,20) crossings")
    return 0 if result["bars_replayed"] > 0 else 1
