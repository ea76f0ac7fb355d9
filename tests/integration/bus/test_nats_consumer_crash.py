"""(b) A consumer process killed with SIGKILL mid-stream, then restarted.

What happens: the consumer (helpers/consumer.py, a separate process) records each handled id
before its handler returns. It is killed with SIGKILL while events are still flowing; the
events it had received but not acked stay pending in its group's durable consumer and come
back after the ack wait, and a new process with the same name and group resumes the durable
where the first stopped. Every published event is processed at least once, none is lost;
the few handled-but-not-acked ones are processed twice, which counting by id removes.
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


async def test_killed_consumer_loses_nothing(private_nats: PrivateNats, tmp_path: Path) -> None:
    token = "t" + uuid.uuid4().hex[:12]
    sent = [event(n) for n in range(EVENTS)]
    first, second = await kill_mid_stream(
        private_nats.url,
        f"sc.LIVE.trading.{token}.submitted",
        f"sc.LIVE.trading.{token}.>",
        sent,
        tmp_path,
        group="crashers",
        name="crash-test",
        ack_wait="1",
        ordered=False,
        kill_after=100,
        within=30,
    )
    expected = {ev.id for ev in sent}
    processed = first + second
    assert set(processed) == expected  # count in = count out, by id
    assert len(set(processed)) == EVENTS
    assert second, "the restarted consumer took over"
    assert len(processed) - EVENTS <= 2 * 128  # duplicates only from the unacked prefetch
