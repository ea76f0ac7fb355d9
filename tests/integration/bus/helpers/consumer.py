"""A consumer process for the crash test: subscribes one group and records handled ids.

Usage: ``python consumer.py URL PATTERN GROUP NAME OUTFILE [ACK_WAIT [ordered]]``. Each handled
event's id is appended to OUTFILE as one line (a single ``write`` on an ``O_APPEND`` descriptor,
so a SIGKILL never leaves half a line) before the handler returns, i.e. before the ack. With
``ordered`` the subscription is ordered (`EventBus.subscribe`), its ack wait ACK_WAIT too.
Prints ``ready`` once subscribed, then runs until killed.
"""

from __future__ import annotations

import asyncio
import os
import sys

from virtufin.bus.nats import NatsBus
from virtufin.bus.port import Delivery
from virtufin.envelope import Envelope


async def main(
    url: str, pattern: str, group: str, name: str, out: str, ack_wait: float, ordered: bool
) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def handle(envelope: Envelope, delivery: Delivery) -> None:
        await asyncio.sleep(0.003)  # some work, so that the kill lands mid-stream
        os.write(fd, f"{envelope.id}\n".encode())

    bus = await NatsBus.connect(
        url=url, name=name, ack_wait_seconds=ack_wait, ordered_ack_wait_seconds=ack_wait
    )
    await bus.subscribe(pattern, handle, group=group, ordered=ordered)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    url, pattern, group, name, out, *rest = sys.argv[1:]
    ack_wait = float(rest[0]) if rest else 1.0
    asyncio.run(main(url, pattern, group, name, out, ack_wait, rest[1:2] == ["ordered"]))
