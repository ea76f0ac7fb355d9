"""(c) The NATS server restarted under load (same store dir, same port).

What happens: a publisher keeps publishing and a group subscriber keeps consuming while the
server is stopped and started again. The bus is never re-created: publishes issued during
the outage wait and retry with the same ``Nats-Msg-Id`` until the server is back (so a retry
cannot store an event twice), the client reconnects by itself, and the subscription's pull
loop notices the new connection and asks the restarted server for more. Every publish that
returned (was acknowledged) is consumed.
"""

from __future__ import annotations

import asyncio
import signal

import pytest
from harness.nats import PrivateNats
from helpers.recording import Recorder, event, eventually

from virtufin.bus.nats import NatsBus

pytestmark = [pytest.mark.nats, pytest.mark.slow]

EVENTS = 600


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["stop", "kill"])
async def test_bus_recovers_from_a_server_restart(private_nats: PrivateNats, sig: int) -> None:
    bus = await NatsBus.connect(
        url=private_nats.url,
        name="restart",
        reconnect_time_wait_seconds=0.1,
        ack_wait_seconds=2.0,
    )
    try:
        received = Recorder()
        await bus.subscribe("sc.LIVE.trading.>", received, group="consumers")
        acknowledged: list[str] = []

        async def publish_all() -> None:
            for n in range(EVENTS):
                ev = event(n)
                await bus.publish("sc.LIVE.trading.order.submitted", ev)
                acknowledged.append(ev.id)
                await asyncio.sleep(0.002)

        publishing = asyncio.create_task(publish_all())
        await eventually(lambda: len(received.calls) >= 150, "150 events before the restart")
        private_nats.stop(sig)
        await asyncio.sleep(0.5)
        during_outage = len(acknowledged)
        await asyncio.sleep(0.5)
        assert len(acknowledged) == during_outage, "nothing is acknowledged while down"
        private_nats.start()

        await asyncio.wait_for(publishing, timeout=40)
        await eventually(
            lambda: set(received.ids) >= set(acknowledged), "every acked event", within=30
        )
        assert bus.reconnects >= 1
        assert len(acknowledged) == EVENTS
        assert during_outage < EVENTS, "the restart came too late to be under load"
        assert set(received.ids) == set(acknowledged)
    finally:
        await bus.close()
