"""The bundled strategies make the same decisions in every engine, and match backtesting.py."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest
from backtesting.lib import crossover

from virtufin.envelope import Envelope
from virtufin.runtime.factory import create_engine
from virtufin.runtime.manifest import WorkerManifest
from virtufin.topics import EventTypes

ROOT = Path(__file__).resolve().parents[3]


def sma_manifests(native_build: Path) -> dict[str, tuple[WorkerManifest, str | None]]:
    same_id = {"id": "sma"}
    klass = WorkerManifest.load(ROOT / "workers/sma_cross/manifest.json")
    script = WorkerManifest.load(ROOT / "workers/sma_cross/script.manifest.json")
    native = WorkerManifest.load(native_build / "libsma_cross.manifest.json")
    return {
        "class": (klass.model_copy(update=same_id), None),
        "script": (script.model_copy(update=same_id), None),
        "native": (native.model_copy(update=same_id), None),
        "native-safe": (native.model_copy(update=same_id), "process"),
    }


def decisions(manifest, isolation, bars, params, *, batch: bool = False):
    with create_engine(manifest, params=params, isolation=isolation) as engine:
        if batch:
            outputs = [r.envelope for o in engine.process_batch(bars) for r in o.outputs]
        else:
            outputs = [out for bar in bars for out in engine.process(bar)]
    return [
        (o.eventtime, o.data["side"], json.dumps(o.data, sort_keys=True), o.subject)
        for o in outputs
    ]


def expected_by_backtesting(bars: list[Envelope], fast: int, slow: int):
    """backtesting.py's SmaCross: ``crossover(sma1, sma2)`` buys, ``crossover(sma2, sma1)`` sells,
    evaluated on each bar once both SMAs exist (its `next` starts when indicators warm up)."""
    closes = pd.Series([bar.data["close"] for bar in bars])
    sma1 = closes.rolling(fast).mean().to_numpy()
    sma2 = closes.rolling(slow).mean().to_numpy()
    out = []
    for i in range(slow, len(bars)):  # both SMAs exist on bars i-1 and i
        a, b = sma1[: i + 1], sma2[: i + 1]
        if crossover(a, b):
            out.append((bars[i].eventtime, "buy"))
        elif crossover(b, a):
            out.append((bars[i].eventtime, "sell"))
    return out


@pytest.mark.parametrize(("fast", "slow"), [(10, 20), (5, 12)])
def test_sma_cross_is_identical_in_every_engine(native_build, bars, fast, slow):
    params = {"fast": fast, "slow": slow}
    runs = {
        name: decisions(manifest, isolation, bars, params)
        for name, (manifest, isolation) in sma_manifests(native_build).items()
    }
    script_manifest = sma_manifests(native_build)["script"][0]
    runs["script-batched"] = decisions(script_manifest, None, bars, params, batch=True)
    reference = runs["class"]
    for name, run in runs.items():
        assert run == reference, name
    sides = [side for _, side, _, _ in reference]
    assert sides.count("buy") >= 3
    assert sides.count("sell") >= 3
    assert all(a != b for a, b in itertools.pairwise(sides))  # positions reverse
    first = json.loads(reference[0][2])
    assert first["sizing"] == "all_in"
    assert first["exclusive"] is True
    assert first["qty"] is None
    assert [(t, side) for t, side, _, _ in reference] == expected_by_backtesting(bars, fast, slow)


def test_sma_cross_orders_go_to_the_scenario_order_topic(bars):
    manifest = WorkerManifest.load(ROOT / "workers/sma_cross/manifest.json")
    with create_engine(manifest) as engine:
        routed = [r for bar in bars for r in engine.process_routed(bar)]
    assert {r.topic for r in routed} == {"sc.BT_SMALL.trading.order.submitted"}
    assert {r.envelope.type for r in routed} == {EventTypes.order("submitted")}
    first = routed[0].envelope
    assert first.clocktype == "historical"
    assert first.eventtime == first.time
    assert (first.marketlane, first.marketselector, first.runid) == ("hyp", "SMALL", "run-small-1")


def order(symbol: str, qty, limit_price=None, n: int = 0) -> Envelope:
    return Envelope.new(
        type=EventTypes.order("submitted"),
        source="urn:com.virtufin.worker.sma",
        scenarioid="BT_SMALL",
        data={
            "order_id": f"o-{n}",
            "symbol": symbol,
            "venue": "binance",
            "side": "buy",
            "type": "market" if limit_price is None else "limit",
            "qty": qty,
            "limit_price": limit_price,
            "sizing": "units" if qty is not None else "all_in",
            "exclusive": False,
            "reason": "test",
        },
    )


@pytest.mark.parametrize("allow_all_in", [True, False])
def test_risk_limit_twins_agree(native_build, bars, allow_all_in):
    stream = [
        order("BTCUSDT", 1.0, n=1),  # no reference price yet
        *bars[:5],
        order("BTCUSDT", 3, n=2),  # 3 × last close: accepted
        order("BTCUSDT", 2000, n=3),  # far above the limit
        order("BTCUSDT", 10, 99.5, n=4),  # limit price used
        order("BTCUSDT", None, n=5),  # all_in
        order("ETHUSDT", 1, n=6),  # unknown symbol
    ]
    params = {"max_notional": 1000.0, "allow_all_in": allow_all_in}
    python = WorkerManifest.load(ROOT / "workers/risk_limit/manifest.json")
    native = WorkerManifest.load(native_build / "librisk_limit.manifest.json")
    results = {}
    for name, manifest in (("python", python), ("native", native)):
        with create_engine(manifest, params=params) as engine:
            results[name] = [(o.type, o.data) for ev in stream for o in engine.process(ev)]
    assert results["python"] == results["native"]
    kinds = [kind.rsplit(".", 1)[1] for kind, _ in results["python"]]
    assert kinds == [
        "rejected",
        "accepted",
        "rejected",
        "accepted",
        "accepted" if allow_all_in else "rejected",
        "rejected",
    ]
    reasons = [data.get("reject_reason") for _, data in results["python"]]
    assert reasons[0] == "no reference price for BTCUSDT"
    assert reasons[2].startswith("notional ")
    assert reasons[2].endswith(" exceeds the limit 1000.00")
    assert results["python"][3][1]["notional"] == pytest.approx(995.0)


def test_each_symbol_has_its_own_window_in_every_engine(native_build, bars):
    """Two symbols interleaved bar by bar decide as each symbol alone would."""
    params = {"fast": 5, "slow": 12}
    other = [
        bar.with_changes(
            id=f"{bar.id}-ETH",
            data={**bar.data, "symbol": "ETHUSDT", "close": round(bar.data["close"] * 0.05, 4)},
        )
        for bar in reversed(bars)  # another price path: the same closes backwards
    ]
    other = [
        o.with_changes(time=b.time, eventtime=b.eventtime) for o, b in zip(other, bars, strict=True)
    ]
    mixed = [bar for pair in zip(bars, other, strict=True) for bar in pair]
    for name, (manifest, isolation) in sma_manifests(native_build).items():
        alone = {
            symbol: decisions(manifest, isolation, stream, params)
            for symbol, stream in (("BTCUSDT", bars), ("ETHUSDT", other))
        }
        together = decisions(manifest, isolation, mixed, params)
        for symbol, expected in alone.items():
            assert expected, (name, symbol)
            mine = [d for d in together if json.loads(d[2])["symbol"] == symbol]
            assert [d[:3] for d in mine] == [d[:3] for d in expected], (name, symbol)
