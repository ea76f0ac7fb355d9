"""How the NATS adapter maps patterns onto streams and names consumers (no server needed)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from virtufin.bus.nats import NatsBus, consumer_name, intersect, stream_subject_for
from virtufin.lanes import matches

TOKENS = st.sampled_from(["a", "b", "sc", "LIVE"])
PATTERN_TOKENS = st.sampled_from(["a", "b", "sc", "LIVE", "*"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(PATTERN_TOKENS, min_size=1, max_size=4))
    if draw(st.booleans()):
        tokens.append(">")
    return ".".join(tokens)


@given(patterns(), patterns(), st.lists(TOKENS, min_size=1, max_size=6).map(".".join))
def test_intersection_matches_exactly_what_both_patterns_match(a: str, b: str, topic: str) -> None:
    both = matches(a, topic) and matches(b, topic)
    common = intersect(a, b)
    assert (common is not None and matches(common, topic)) == both


def test_stream_subjects_of_infrastructure_topics() -> None:
    assert stream_subject_for("workmanager.lifecycle") == "workmanager.>"
    assert stream_subject_for("state-changes") == "state-changes"
    assert stream_subject_for("sc.LIVE.trading.order.submitted") is None
    assert stream_subject_for("*.lifecycle") is None


def test_consumer_names_are_legal_stable_and_distinct() -> None:
    legal = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
    one = consumer_name("svc", "sc.*.trading.>", "g", "VIRTUFIN_SC:sc.*.trading.>")
    assert legal.match(one)
    assert one == consumer_name("svc", "sc.*.trading.>", "g", "VIRTUFIN_SC:sc.*.trading.>")
    # Sanitising maps both '.' and '*' to '_': the hash keeps them apart.
    other = consumer_name("svc", "sc._.trading.>", "g", "VIRTUFIN_SC:sc._.trading.>")
    assert other != one
    assert consumer_name("svc", "x" * 500, None, "f", unique="u") != consumer_name(
        "svc", "x" * 500, None, "f", unique="v"
    )
    assert legal.match(consumer_name("svc", "x" * 500, None, "f"))


def test_patterns_route_to_the_streams_that_can_hold_them() -> None:
    bus = NatsBus(stream_prefix="T")
    route = {t.stream: (t.filter_subject, t.client_filter) for t in bus._targets(">")}
    assert route == {
        "T_ACT": ("act.>", False),
        "T_HYP": ("hyp.>", False),
        "T_SC": ("sc.>", False),
        "T_INFRA": (None, False),
    }
    short = {t.stream: (t.filter_subject, t.client_filter) for t in bus._targets("*.lifecycle")}
    assert short == {"T_INFRA": (None, True)}  # no lane topic has two tokens
    assert [(t.stream, t.filter_subject) for t in bus._targets("sc.LIVE.>")] == [
        ("T_SC", "sc.LIVE.>")
    ]
    assert [(t.stream, t.filter_subject) for t in bus._targets("gateway.audit")] == [
        ("T_INFRA", "gateway.audit")
    ]
