"""The kill-and-restart run both consumer crash tests share: a consumer process (consumer.py)
on one group, events published while it works, SIGKILL mid-stream, a second process in the same
group; what each process recorded comes back for the test's own assertions."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from asyncio.subprocess import PIPE, Process
from pathlib import Path

from helpers.recording import eventually

from virtufin.bus.nats import NatsBus
from virtufin.envelope import Envelope

HELPER = Path(__file__).parent / "consumer.py"
ROOT = Path(__file__).resolve().parents[4]


async def start_consumer(
    url: str, pattern: str, out: Path, *, group: str, name: str, ack_wait: str, ordered: bool
) -> Process:
    """consumer.py in a process of its own, once it printed ``ready``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(HELPER), url, pattern, group, name, str(out), ack_wait]
    args += ["ordered"] if ordered else []
    proc = await asyncio.create_subprocess_exec(sys.executable, *args, stdout=PIPE, env=env)
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
    assert line.strip() == b"ready", line
    return proc


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def kill_mid_stream(
    url: str,
    topic: str,
    pattern: str,
    sent: list[Envelope],
    folder: Path,
    *,
    group: str,
    name: str,
    ack_wait: str,
    ordered: bool,
    kill_after: int,
    within: float,
) -> tuple[list[str], list[str]]:
    """Ids the first (killed after `kill_after` handled) and the second process recorded, once
    every event of `sent` was recorded by one of them."""
    first_out, second_out = folder / "first.ids", folder / "second.ids"

    async def start(out: Path) -> Process:
        return await start_consumer(
            url, pattern, out, group=group, name=name, ack_wait=ack_wait, ordered=ordered
        )

    first = await start(first_out)
    second: Process | None = None
    bus = await NatsBus.connect(url=url, name=f"{name}-publisher")
    try:

        async def publish_all() -> None:
            for ev in sent:
                await bus.publish(topic, ev)
                await asyncio.sleep(0.001)

        publishing = asyncio.create_task(publish_all())
        handled = f"{kill_after} events handled"
        await eventually(lambda: len(lines(first_out)) >= kill_after, handled, within=20)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert len(lines(first_out)) < len(sent), "the kill came too late to be mid-stream"
        await publishing  # newer events are stored while the killed ones are outstanding

        second = await start(second_out)
        expected = {ev.id for ev in sent}
        await eventually(
            lambda: set(lines(first_out)) | set(lines(second_out)) >= expected,
            "every event processed",
            within=within,
        )
        await asyncio.sleep(0.5)
    finally:
        await bus.close()
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
    return lines(first_out), lines(second_out)
