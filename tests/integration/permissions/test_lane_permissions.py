"""Lane permissions, enforced by a real broker: a private ``nats-server -js`` whose config
includes the authorization block rendered from ``services.json``
(`virtufin.permissions.render_nats_authorization`, the committed ``infra/nats/auth.conf``),
with every service's password passed to the server through its environment variable.

- allowed: the marketdata connector publishes ``act.exchange…`` (and a subscriber sees it);
  production roles write ``sc.LIVE…``; a backtest role writes its own scenario;
- refused: workmanager and execution publishing ``act.exchange…``; a non-production role
  publishing ``sc.LIVE…`` (both a role whose allow list lacks ``sc`` and one whose broad
  ``sc.*.trading.>`` is cut back by the generated deny rule); the bus adapter raises
  `PublishRejectedError` naming the subject and the permissions violation, quickly, and the
  connection stays usable;
- a wrong password cannot connect at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from virtufin.bus.nats import NatsBus
from virtufin.bus.port import Delivery
from virtufin.config import ServicesConfig, load_services
from virtufin.envelope import Envelope
from virtufin.errors import BusError, PublishRejectedError
from virtufin.permissions import password_variable, render_nats_authorization
from virtufin.ports import free_port

REPO = Path(__file__).resolve().parents[3]
#: A backtest engine: may write hyp and its scenarios' trading lanes, never sc.LIVE.
BACKTESTER = {
    "name": "backtester",
    "daprAppId": "virtufin-backtester",
    "module": "services.backtester",
    "role": "backtest",
    "grpc": {"host": "127.0.0.1", "port": 45002},
    "publishes": ["hyp.*.exchange.>", "sc.*.trading.>"],
    "subscribes": ["hyp.*.exchange.>"],
}


def _catalogue() -> ServicesConfig:
    data = json.loads((REPO / "services.json").read_text())
    data["services"].append(BACKTESTER)
    return ServicesConfig.model_validate(data)


class Broker:
    """A nats-server with the rendered authorization and a password per service."""

    def __init__(self, folder: Path, services: ServicesConfig) -> None:
        self.folder = folder
        self.port = free_port()
        # nats-server parses a variable's value as a config token: "9f…" would be a number
        # followed by garbage, so passwords start with a letter (docs: virtufin.permissions)
        self.passwords = {s.name: "p" + secrets.token_hex(12) for s in services.services}
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(binary).exists():
            pytest.fail("nats-server is not installed (apt-get install nats-server)")
        conf = folder / "server.conf"
        conf.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            f"jetstream {{ store_dir: {json.dumps(str(folder / 'js'))} }}\n"
            + render_nats_authorization(services)
        )
        env = {**os.environ}
        env.update({password_variable(name): pw for name, pw in self.passwords.items()})
        log = (folder / "server.log").open("ab")
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log, env=env)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"nats-server exited:\n{(folder / 'server.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("nats-server did not start")
                time.sleep(0.02)

    def url(self, user: str, password: str | None = None) -> str:
        return f"nats://{user}:{password or self.passwords[user]}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    server = Broker(tmp_path_factory.mktemp("nats-auth"), _catalogue())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def buses(broker: Broker) -> AsyncIterator[dict[str, NatsBus]]:
    opened: dict[str, NatsBus] = {}
    for name in broker.passwords:
        opened[name] = await NatsBus.connect(
            url=broker.url(name), name=name, publish_timeout_seconds=10
        )
    try:
        yield opened
    finally:
        for bus in opened.values():
            await bus.close()


def _event() -> Envelope:
    return Envelope.new(type="com.virtufin.test.permission", source="urn:com.virtufin.test")


async def _refused(bus: NatsBus, topic: str) -> PublishRejectedError:
    started = time.monotonic()
    with pytest.raises(PublishRejectedError) as refused:
        await bus.publish(topic, _event())
    assert time.monotonic() - started < 5, "a refusal must not wait for the publish timeout"
    assert refused.value.topic == topic
    assert topic in str(refused.value)
    assert "permissions" in str(refused.value).lower()
    return refused.value


def test_the_committed_authorization_is_the_rendered_one() -> None:
    committed = (REPO / "infra" / "nats" / "auth.conf").read_text()
    assert committed == render_nats_authorization(load_services(REPO / "services.json"))
    assert "password: $VIRTUFIN_MARKETDATA_NATS_PASSWORD" in committed  # never a literal


async def test_connectors_publish_market_data_and_others_may_not(
    buses: dict[str, NatsBus],
) -> None:
    seen: list[str] = []
    arrived = asyncio.Event()

    async def record(envelope: Envelope, delivery: Delivery) -> None:
        seen.append(delivery.topic)
        arrived.set()

    await buses["execution"].subscribe("act.exchange.>", record)
    topic = "act.exchange.binance.trade.tape.BTCUSDT"
    await buses["marketdata"].publish(topic, _event())  # the connector's own lane
    for name in ("workmanager", "execution"):
        error = await _refused(buses[name], "act.exchange.binance.trade.tape.ETHUSDT")
        assert "permissions violation for publish" in error.reason.lower()
    await asyncio.wait_for(arrived.wait(), 10)
    await asyncio.sleep(0.3)
    assert seen == [topic]  # the refused ones never reached the stream
    # The refused clients are still connected and publish where they may.
    await buses["workmanager"].publish("sc.LIVE.trading.order.submitted", _event())
    await buses["execution"].publish("sc.LIVE.trading.order.filled", _event())


async def test_only_production_roles_write_the_live_scenario(buses: dict[str, NatsBus]) -> None:
    live = "sc.LIVE.trading.order.submitted"
    await buses["workmanager"].publish(live, _event())  # production
    await buses["gateway"].publish("state-changes", _event())
    await _refused(buses["marketdata"], live)  # a connector: not in its allow list
    # A backtest engine may write its own scenario's trading lanes (sc.*.trading.>) …
    await buses["backtester"].publish("sc.BT_1.trading.order.submitted", _event())
    await buses["backtester"].publish("hyp.EQ_2008.exchange.sim.ohlcv.candle.1d.X", _event())
    # … but the generated deny rule keeps that pattern off the LIVE lane.
    await _refused(buses["backtester"], live)
    await _refused(buses["backtester"], "act.exchange.sim.trade.tape.X")


async def test_a_wrong_password_cannot_connect(broker: Broker) -> None:
    with pytest.raises(BusError, match="cannot connect to NATS"):
        await NatsBus.connect(
            url=broker.url("marketdata", "not-the-password"), connect_timeout_seconds=2
        )
