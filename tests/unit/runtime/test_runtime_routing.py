"""Stamping and routing of outputs: the host fills the envelope and picks the topic."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from virtufin.envelope import Envelope
from virtufin.runtime.routing import Binding, Stamper, UnroutableError
from workers.kit.context import Emission
from workers.kit.ids import order_id

BAR_TIME = datetime(2024, 3, 1, tzinfo=UTC)


def bar(**attrs) -> Envelope:
    base = {
        "type": "com.virtufin.exchange.binance.ohlcv.candle",
        "source": "urn:com.virtufin.marketdata",
        "data": {"symbol": "BTCUSDT"},
        "correlationid": "corr",
        "scenarioid": "BT_1",
        "runid": "run-1",
        "clocktype": "historical",
        "eventtime": BAR_TIME,
        "marketlane": "hyp",
        "marketselector": "SEL",
        "portfoliolane": "hyp",
        "strategylane": "act",
        "traceparent": "00-abc-def-01",
    }
    base.update(attrs)
    return Envelope.new(**base)


def stamp(event, *emissions, binding=None, output_topic=None):
    stamper = Stamper("sma", binding=binding or Binding(), output_topic=output_topic)
    return stamper.stamp(event, list(emissions), stamper.clock_for(event))


def test_outputs_carry_the_inputs_context_and_the_workers_source():
    ((topic, out),) = stamp(bar(), Emission("com.virtufin.trading.order.submitted", {"q": 1}))
    assert topic == "sc.BT_1.trading.order.submitted"
    assert out.source == "urn:com.virtufin.worker.sma"
    assert (out.correlationid, out.scenarioid, out.runid) == ("corr", "BT_1", "run-1")
    assert (out.marketlane, out.marketselector, out.portfoliolane, out.strategylane) == (
        "hyp",
        "SEL",
        "hyp",
        "act",
    )
    assert out.traceparent == "00-abc-def-01"
    assert out.clocktype == "historical"
    assert out.eventtime == BAR_TIME == out.time
    assert out.walltime is not None
    assert out.walltime > BAR_TIME
    out.validate()


def test_ids_are_deterministic_per_input_and_index():
    event = bar()
    first = stamp(event, Emission("a.b"), Emission("a.b"))
    again = stamp(event, Emission("a.b"), Emission("a.b"))
    assert [r.envelope.id for r in first] == [r.envelope.id for r in again]
    assert first[0].envelope.id != first[1].envelope.id
    assert stamp(bar(), Emission("a.b"))[0].envelope.id != first[0].envelope.id


def test_live_inputs_get_the_wall_clock_and_fallbacks_from_the_binding():
    live = Envelope.new(type="com.virtufin.exchange.binance.ohlcv.candle", source="urn:x")
    before = datetime.now(UTC)
    ((topic, out),) = stamp(
        live,
        Emission("com.virtufin.trading.order.submitted", {}),
        binding=Binding(scenario_id="LIVE", run_id="r9"),
    )
    assert topic == "sc.LIVE.trading.order.submitted"
    assert out.clocktype == "wall"
    assert out.eventtime >= before
    assert (out.scenarioid, out.runid, out.correlationid) == ("LIVE", "r9", live.id)


def test_forced_clock_modes():
    ((_, wall),) = stamp(bar(), Emission("a.b"), binding=Binding(clock="wall"))
    assert wall.clocktype == "wall"
    live = Envelope.new(type="x", source="y", time=BAR_TIME)
    ((_, hist),) = stamp(live, Emission("a.b"), binding=Binding(clock="historical"))
    assert hist.clocktype == "historical"
    assert hist.eventtime == BAR_TIME


@pytest.mark.parametrize(
    ("kind", "data", "topic"),
    [
        ("com.virtufin.trading.order.rejected", {}, "sc.BT_1.trading.order.rejected"),
        ("com.virtufin.trading.trade.executed", {}, "sc.BT_1.trading.trade.executed"),
        ("com.virtufin.position.opened", {"symbol": "ETHUSDT"}, "sc.BT_1.position.ETHUSDT.opened"),
        ("com.virtufin.position.opened", {}, "sc.BT_1.position.portfolio.opened"),
        ("com.virtufin.pnl.realized.update", {}, "sc.BT_1.pnl.realized.update"),
        ("com.virtufin.risk.limit.breach", {}, "sc.BT_1.risk.limit.breach"),
    ],
)
def test_scenario_types_map_onto_the_scenarios_topics(kind, data, topic):
    assert stamp(bar(), Emission(kind, data))[0].topic == topic


def test_other_types_use_emit_topic_then_replytopic_then_output_topic():
    with_reply = bar(extensions={"replytopic": "client.response"})
    assert stamp(with_reply, Emission("x.y", topic="a.response"))[0].topic == "a.response"
    assert stamp(with_reply, Emission("x.y"), output_topic="o.response")[0].topic == (
        "client.response"
    )
    assert stamp(bar(), Emission("x.y"), output_topic="o.response")[0].topic == "o.response"
    assert stamp(bar(), Emission("x.y"), binding=Binding(output_topic="b.response"),
                 output_topic="o.response")[0].topic == "b.response"  # fmt: skip
    assert stamp(bar(), Emission("x.y"))[0].topic is None


def test_scenario_routing_needs_a_scenario_and_a_well_formed_type():
    orphan = Envelope.new(type="x", source="y")
    with pytest.raises(UnroutableError, match="needs a scenario id"):
        stamp(orphan, Emission("com.virtufin.trading.order.submitted"))
    with pytest.raises(UnroutableError, match="does not make a scenario topic"):
        stamp(bar(), Emission("com.virtufin.risk.x"))


SUBMITTED = "com.virtufin.trading.order.submitted"


def test_orders_without_an_id_get_the_id_derived_from_the_input():
    event = bar()
    first = stamp(event, Emission(SUBMITTED, {"side": "buy", "order_id": None}))
    again = stamp(event, Emission(SUBMITTED, {"side": "buy"}))
    out = first[0].envelope
    assert out.data == {"side": "buy", "order_id": order_id("sma", event.source, event.id, 0)}
    assert out.subject == f"order/{out.data['order_id']}"
    assert again[0].envelope.data["order_id"] == out.data["order_id"]  # a redelivery: same id
    other = stamp(bar(), Emission(SUBMITTED, {"side": "buy"}))[0].envelope
    assert other.data["order_id"] != out.data["order_id"]  # another input: another id


def test_host_made_ids_never_collide_with_the_workers_own():
    event = bar()
    own = order_id("sma", event.source, event.id, 1)
    routed = stamp(
        event,
        Emission(SUBMITTED, {"order_id": own}, "mine"),
        Emission(SUBMITTED, {"order_id": ""}),
        Emission("com.example.note", {"order_id": None}),
    )
    ids = [r.envelope.data["order_id"] for r in routed]
    assert ids[0] == own
    assert routed[0].envelope.subject == "mine"  # an explicit id or subject is left alone
    assert ids[1] == order_id("sma", event.source, event.id, 1 + 3)  # 1 was taken
    assert ids[2] is None  # only order requests get ids
