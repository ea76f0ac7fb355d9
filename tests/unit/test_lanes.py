"""Topic parsing, formatting, re-addressing and matching (docs/spec/lanes-and-topics.md)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from virtufin import topics
from virtufin.errors import TopicError
from virtufin.lanes import (
    Family,
    format_topic,
    matches,
    overlaps,
    parse,
    to_backtest,
    to_live,
    to_live_scenario,
    to_scenario,
    validate_pattern,
)

ids = st.from_regex(r"\A[A-Z0-9_]{1,32}\Z")
tokens = st.from_regex(r"\A[a-z0-9][a-z0-9_\-]{0,11}\Z")
qualifiers = st.lists(st.from_regex(r"\A[A-Za-z0-9_\-]{1,12}\Z"), max_size=3)


@st.composite
def act_topics(draw: st.DrawFn) -> str:
    parts = [draw(tokens), draw(tokens), draw(tokens), *draw(qualifiers)]
    return "act.exchange." + ".".join(parts)


@st.composite
def scenario_topics(draw: st.DrawFn) -> str:
    parts = [draw(tokens), draw(tokens), draw(tokens), *draw(qualifiers)]
    return f"sc.{draw(ids)}." + ".".join(parts)


@st.composite
def any_topic(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["act", "hyp", "sc", "infra"]))
    if kind == "act":
        return draw(act_topics())
    if kind == "hyp":
        return draw(act_topics()).replace("act.", f"hyp.{draw(ids)}.", 1)
    if kind == "sc":
        return draw(scenario_topics())
    category = draw(st.sampled_from(["lifecycle", "infra", "audit"]))
    service = draw(st.from_regex(r"\A[a-z][a-z0-9\-]{0,15}\Z"))
    if service in ("act", "hyp", "sc"):
        service = "svc"
    return f"{service}.{category}"


@given(any_topic())
def test_every_valid_topic_round_trips_through_parse_and_format(topic: str) -> None:
    assert format_topic(parse(topic)) == topic


@given(act_topics(), ids)
def test_act_to_hyp_and_back_is_the_identity(topic: str, selector: str) -> None:
    hyp = to_backtest(parse(topic), selector)
    assert hyp.family is Family.HYP
    assert format_topic(hyp) == topic.replace("act.", f"hyp.{selector}.", 1)
    assert format_topic(to_live(hyp)) == topic


@given(scenario_topics(), ids)
def test_live_to_scenario_and_back_is_the_identity(topic: str, scenario_id: str) -> None:
    live = to_live_scenario(parse(topic))
    if scenario_id == "LIVE":
        with pytest.raises(TopicError):
            to_scenario(live, scenario_id)
        return
    moved = to_scenario(live, scenario_id)
    assert moved.scenario_id == scenario_id
    assert to_live_scenario(moved) == live
    assert format_topic(to_scenario(to_live_scenario(moved), scenario_id)) == format_topic(moved)


BAD_TOPICS = [
    ("act.EQ_2008.exchange.binance.trade.tape", "act topics MUST NOT carry a selector"),
    ("hyp.exchange.binance.trade.tape", "hyp topics MUST carry a selector"),
    ("hyp", "hyp topics MUST carry a selector"),
    ("hyp.eq_lower.exchange.binance.trade.tape", "selector 'eq_lower' must match"),
    ("hyp.EQ.binance.trade.tape", "hyp topics continue with '<selector>.exchange'"),
    ("act.exchange.binance.trade", "expected <venue>.<entity>.<event> after the prefix"),
    ("act.exchange.a.b.c.d.e.f.g", "at most 3 trailing id/qualifier tokens"),
    ("sc.lower.trading.order.submitted", "scenario id 'lower' must match"),
    ("sc.S1.trading.order", "expected <domain>.<entity>.<event> after the prefix"),
    ("sc." + "A" * 33 + ".trading.order.filled", "must match ^[A-Z0-9_]{1,32}$"),
    ("act.exchange.binance..tape", "empty token"),
    ("act.exchange.binance.trade.tape.*", "wildcards are allowed in subscriptions only"),
    ("act.exchange.bin ance.trade.tape", "may hold only letters, digits"),
    ("workmanager.weird", "infrastructure topics are <service>."),
    ("Workmanager.lifecycle", "infrastructure topics start with a lower-case service name"),
    ("", "is empty"),
]


@pytest.mark.parametrize(("topic", "message"), BAD_TOPICS)
def test_bad_topics_are_rejected_with_a_message_saying_why(topic: str, message: str) -> None:
    with pytest.raises(TopicError) as info:
        parse(topic)
    assert message in str(info.value)
    assert info.value.topic == topic


def test_conversions_refuse_the_wrong_family() -> None:
    act = parse("act.exchange.binance.trade.tape")
    with pytest.raises(TopicError, match="only hyp topics"):
        to_live(act)
    with pytest.raises(TopicError, match=r"only sc\.LIVE topics"):
        to_scenario(parse("sc.S1.trading.order.filled"), "S2")
    with pytest.raises(TopicError, match="selector must match"):
        to_backtest(act, "bad-selector")


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("act.exchange.>", "act.exchange.binance.trade.tape", True),
        ("act.exchange.>", "act.exchange", False),
        ("act.*.binance.trade.tape", "act.exchange.binance.trade.tape", True),
        ("act.*.binance.trade", "act.exchange.binance.trade.tape", False),
        ("hyp.*.exchange.>", "hyp.EQ.exchange.binance.trade.tape", True),
        ("sc.LIVE.trading.order.*", "sc.LIVE.trading.order.filled", True),
        ("sc.LIVE.trading.order.*", "sc.LIVE.trading.order.filled.o1", False),
        (">", "state-changes", True),
        ("state-changes", "state-changes", True),
    ],
)
def test_nats_wildcard_semantics(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("sc.>", "sc.BT_1.>", True),
        ("sc.BT_1.trading.order.*", "sc.BT_1.>", True),
        ("sc.*.position.>", "sc.BT_1.trading.>", False),
        ("sc.BT_2.>", "sc.BT_1.>", False),
        ("hyp.>", "sc.BT_1.>", False),
        (">", "sc.BT_1.>", True),
        ("sc.BT_1", "sc.BT_1.>", False),  # '>' needs one token more
        ("sc.BT_1.trading.order.filled", "sc.BT_1.trading.order.filled", True),
        ("sc.*.trading.order.filled", "sc.BT_1.*.order.*", True),
        ("sc.*.trading", "sc.BT_1.trading.order", False),
    ],
)
def test_patterns_overlap_when_some_topic_matches_both(
    first: str, second: str, expected: bool
) -> None:
    assert overlaps(first, second) is expected
    assert overlaps(second, first) is expected


@given(st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=4), st.booleans())
def test_overlap_agrees_with_matching_a_concrete_topic(tokens: list[str], tail: bool) -> None:
    pattern = ".".join(tokens + ([">"] if tail else []))
    for topic in ("a", "a.b", "b.a.b", "a.a.a.a", "a.b.a.b.a"):
        if matches(pattern, topic):
            assert overlaps(pattern, topic)
        else:
            assert not overlaps(pattern, topic)


@pytest.mark.parametrize("pattern", ["act.>.exchange", "act..x", "act.ex change"])
def test_bad_patterns_are_rejected(pattern: str) -> None:
    with pytest.raises(TopicError):
        validate_pattern(pattern)


def test_registry_builders_produce_parseable_topics() -> None:
    assert topics.bar("binance", "BTCUSDT") == "act.exchange.binance.ohlcv.candle.1d.BTCUSDT"
    assert parse(topics.bar("x", "Y", selector="SEL")).selector == "SEL"
    assert topics.order_event("LIVE", "filled", "o-1") == "sc.LIVE.trading.order.filled.o-1"
    assert (
        topics.position_event("S1", "portfolio", "snapshot") == "sc.S1.position.portfolio.snapshot"
    )
    with pytest.raises(TopicError):
        topics.order_event("not-an-id", "filled")
