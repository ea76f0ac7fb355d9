"""(b) A consumer process killed with SIGKILL mid-stream, then restarted.

What happens: the consumer (helpers/consumer.py, a separate process) records each handled id
before its handler returns. It is killed with SIGKILL while events are still flowing; the
events it had received but not acked stay pending in its group's durable consumer and come
back after the ack wait, and a new process with the same name and group resumes the durable
where the first stopped. Every published event is processed at least once, none is lost;
the few handled-but-not-acked ones are processed twice, which counting by id removes.
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


async def start_consumer(url: str, pattern: str, out: Path) -> Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(HELPER), url, pattern, "crashers", "crash-test", str(out), "1"]
    proc = await asyncio.create_subprocess_exec(sys.executable, *args, stdout=PIPE, env=env)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
    assert line.strip() == b"ready", line
    return proc


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_killed_consumer_loses_nothing(private_nats: PrivateNats, tmp_path: Path) -> None:
    token = "t" + uuid.uuid4().hex[:12]
    pattern = f"sc.LIVE.trading.{token}.>"
    first_out, second_out = tmp_path / "first.ids", tmp_path / "second.ids"
    first = await start_consumer(private_nats.url, pattern, first_out)
    second: Process | None = None
    bus = await NatsBus.connect(url=private_nats.url, name="crash-publisher")
    try:
        sent = [event(n) for n in range(EVENTS)]

        async def publish_all() -> None:
            for ev in sent:
                await bus.publish(f"sc.LIVE.trading.{token}.submitted", ev)
                await asyncio.sleep(0.001)

        publishing = asyncio.create_task(publish_all())
        await eventually(lambda: len(lines(first_out)) >= 100, "100 events handled", within=20)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert len(lines(first_out)) < EVENTS, "the kill came too late to be mid-stream"
        await publishing

        second = await start_consumer(private_nats.url, pattern, second_out)
        expected = {ev.id for ev in sent}
        await eventually(
            lambda: set(lines(first_out)) | set(lines(second_out)) >= expected,
            "every event processed",
            within=30,
        )
        await asyncio.sleep(0.5)
    finally:
        await bus.close()
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()

    processed = lines(first_out) + lines(second_out)
    assert set(processed) == expected  # count in = count out, by id
    assert len(set(processed)) == EVENTS
    assert lines(second_out), "the restarted consumer took over"
    assert len(processed) - EVENTS <= 2 * 128  # duplicates only from the unacked prefetch
