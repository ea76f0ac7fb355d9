"""Ordered subscriptions across a SIGKILL: the event the dead process held comes back first.

The known gap this closes: a consumer killed while it holds fetched but unacknowledged events
(its prefetch) gets them back only after the ack wait, *after* newer events, so an
order-sensitive stateful worker (an SMA window) would see its inputs out of order. An ordered
subscription (``ordered=True``: a JetStream consumer with ``max_ack_pending=1``) has at most
one event in flight per group; the server hands out nothing newer until that one is acked or
redelivered.

The test: a consumer process (helpers/consumer.py) on an ordered group records each handled id
before its handler returns (before the ack); it is killed with SIGKILL mid-stream, while the
publisher keeps going, so the kill lands with an event delivered and not acknowledged (and a
backlog behind it). A new process joins the same group. Joined, the two records are the
published sequence in order, none lost; the only repeat allowed is the event the first process
handled but had not acknowledged, at the seam. The same run without ``ordered`` is the
default's behaviour (redeliveries after newer events) and is not asserted here.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from harness.nats import PrivateNats
from helpers.kill_restart import kill_mid_stream
from helpers.recording import event

pytestmark = [pytest.mark.nats, pytest.mark.slow]

EVENTS = 400


async def test_killed_ordered_consumer_resumes_in_order(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    token = "t" + uuid.uuid4().hex[:12]
    sent = [event(n) for n in range(EVENTS)]
    number = {ev.id: n for n, ev in enumerate(sent)}
    first, second = await kill_mid_stream(
        private_nats.url,
        f"sc.LIVE.trading.{token}.submitted",
        f"sc.LIVE.trading.{token}.>",
        sent,
        tmp_path,
        group="stateful",
        name="ordered-test",
        ack_wait="1.5",
        ordered=True,
        kill_after=60,
        within=60,
    )
    before = [number[i] for i in first]
    after = [number[i] for i in second]
    assert before == list(range(len(before))), "the first process saw its events in order"
    assert after, "the restarted consumer took over"
    # The seam: the restarted process starts with the event the first was killed on (handled
    # there or not), never with a newer one.
    assert after[0] in (len(before) - 1, len(before)), (before[-3:], after[:3])
    joined = before + after[1:] if after[0] == len(before) - 1 else before + after
    assert joined == list(range(EVENTS)), "in order, none lost, no other repeat"
