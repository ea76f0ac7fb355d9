"""When the broker says no, on private NATS servers.

- A publish the server's permissions deny raises `PublishRejectedError` naming the violation
  (it is not retried until the timeout, and not reported as stored).
- A publish whose stream was deleted behind the bus's back raises `PublishRejectedError`
  saying no stream captures the subject.
- An unreachable server makes `connect` fail within its timeout with a `BusError`.
- Infrastructure topics of a service the INFRA stream does not know yet: publishing adds
  ``<service>.>`` to the stream (keeping what others added); ``*.<category>`` subscribers
  see every service's topics of that category and nothing else.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest
from harness.nats import PrivateNats
from helpers.recording import Recorder, event, eventually

from virtufin.bus.nats import NatsBus
from virtufin.errors import BusError, PublishRejectedError
from virtufin.ports import free_port

pytestmark = pytest.mark.nats

PERMISSIONS = """
authorization {
  users = [
    { user: "svc", password: "pw",
      permissions: { publish: { allow: [">"], deny: ["act.exchange.forbidden.>"] },
                     subscribe: { allow: [">"] } } }
  ]
}
"""


async def test_a_denied_publish_is_rejected_with_the_reason(tmp_path: Path) -> None:
    server = PrivateNats(tmp_path, config=PERMISSIONS)
    server.start()
    try:
        url = f"nats://svc:pw@127.0.0.1:{server.port}"
        async with await NatsBus.connect(url=url, name="perm", publish_timeout_seconds=20) as bus:
            topic = "act.exchange.forbidden.trade.tick"
            started = time.monotonic()
            with pytest.raises(PublishRejectedError, match=r"(?i)permissions violation") as info:
                await bus.publish(topic, event())
            assert info.value.topic == topic
            assert time.monotonic() - started < 5
            inbox = Recorder()
            await bus.subscribe("act.exchange.allowed.>", inbox)
            await bus.publish("act.exchange.allowed.trade.tick", event())  # still fine
            await eventually(lambda: len(inbox.calls) == 1, "the allowed event")
    finally:
        server.stop()


async def test_a_publish_without_a_stream_is_rejected(private_nats: PrivateNats) -> None:
    async with await NatsBus.connect(url=private_nats.url, name="nostream") as bus:
        raw = await nats.connect(private_nats.url)
        try:
            await raw.jetstream().delete_stream(bus.streams["hyp"])
        finally:
            await raw.close()
        with pytest.raises(PublishRejectedError, match="no JetStream stream captures"):
            await bus.publish("hyp.EQ_2008.exchange.binance.trade.tick", event())


async def test_an_unreachable_server_fails_connect_in_time() -> None:
    started = time.monotonic()
    with pytest.raises(BusError, match="cannot connect to NATS"):
        await NatsBus.connect(url=f"nats://127.0.0.1:{free_port()}", connect_timeout_seconds=1)
    assert time.monotonic() - started < 3


async def test_infra_stream_learns_services_and_category_wildcards_work(
    private_nats: PrivateNats,
) -> None:
    raw = await nats.connect(private_nats.url)
    async with await NatsBus.connect(url=private_nats.url, name="infra") as bus:
        js = raw.jetstream()
        infra = bus.streams["infra"]
        # Someone else (the deploy job) added a service meanwhile: it must survive.
        config = (await js.stream_info(infra)).config
        config.subjects = [*config.subjects, "gateway.>"]
        await js.update_stream(config)

        lifecycle, everything = Recorder(), Recorder()
        await bus.subscribe("*.lifecycle", lifecycle)
        await bus.subscribe(">", everything)
        await bus.publish("newsvc.lifecycle", event(1))
        await bus.publish("newsvc.audit", event(2))
        await bus.publish("gateway.lifecycle", event(3))
        await bus.publish("sc.LIVE.trading.order.submitted", event(4))
        await eventually(lambda: len(everything.calls) == 4, "four events on '>'")
        await eventually(lambda: len(lifecycle.calls) == 2, "two lifecycle events")
        await asyncio.sleep(0.3)

        subjects = (await js.stream_info(infra)).config.subjects
        assert {"bus.>", "state-changes", "gateway.>", "newsvc.>"} <= set(subjects)
        assert sorted(s.delivery.topic for s in lifecycle.calls) == [
            "gateway.lifecycle",
            "newsvc.lifecycle",
        ]
        assert len(everything.calls) == 4
    await raw.close()
