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

import asyncio
import os
import signal
import sys
import uuid
from asyncio.subprocess import PIPE, Process
from pathlib import Path

import pytest
from helpers.nats_server import PrivateNats
from helpers.recording import event, eventually

from virtufin.bus.nats import NatsBus

pytestmark = [pytest.mark.nats, pytest.mark.slow]

HELPER = Path(__file__).parent / "helpers" / "consumer.py"
ROOT = Path(__file__).resolve().parents[3]
EVENTS = 400
ACK_WAIT = "1.5"


async def start_consumer(url: str, pattern: str, out: Path) -> Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(HELPER), url, pattern, "stateful", "ordered-test", str(out), ACK_WAIT, "ordered"]
    proc = await asyncio.create_subprocess_exec(sys.executable, *args, stdout=PIPE, env=env)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
    assert line.strip() == b"ready", line
    return proc


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_killed_ordered_consumer_resumes_in_order(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    token = "t" + uuid.uuid4().hex[:12]
    pattern = f"sc.LIVE.trading.{token}.>"
    first_out, second_out = tmp_path / "first.ids", tmp_path / "second.ids"
    first = await start_consumer(private_nats.url, pattern, first_out)
    second: Process | None = None
    bus = await NatsBus.connect(url=private_nats.url, name="ordered-publisher")
    try:
        sent = [event(n) for n in range(EVENTS)]
        number = {ev.id: n for n, ev in enumerate(sent)}

        async def publish_all() -> None:
            for ev in sent:
                await bus.publish(f"sc.LIVE.trading.{token}.submitted", ev)
                await asyncio.sleep(0.001)

        publishing = asyncio.create_task(publish_all())
        await eventually(lambda: len(lines(first_out)) >= 60, "60 events handled", within=20)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        killed_at = len(lines(first_out))
        assert killed_at < EVENTS, "the kill came too late to be mid-stream"
        await publishing  # newer events are stored while the killed one is outstanding

        second = await start_consumer(private_nats.url, pattern, second_out)
        expected = {ev.id for ev in sent}
        await eventually(
            lambda: set(lines(first_out)) | set(lines(second_out)) >= expected,
            "every event processed",
            within=60,
        )
        await asyncio.sleep(0.5)
    finally:
        await bus.close()
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()

    before = [number[i] for i in lines(first_out)]
    after = [number[i] for i in lines(second_out)]
    assert before == list(range(len(before))), "the first process saw its events in order"
    assert after, "the restarted consumer took over"
    # The seam: the restarted process starts with the event the first was killed on (handled
    # there or not), never with a newer one.
    assert after[0] in (len(before) - 1, len(before)), (before[-3:], after[:3])
    joined = before + after[1:] if after[0] == len(before) - 1 else before + after
    assert joined == list(range(EVENTS)), "in order, none lost, no other repeat"
