"""The promotion job's production WorkManager client, against a real gateway and WorkManager
(in-process services on an in-process bus and a SQLite store, on free ports)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.promotion.resources import GatewayWorkManagerClient
from pipelines.promotion.workmanager import Deployment

API_KEY = "promotion-test-key"


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from services.bootstrap import load_serve_config
    from virtufin.cli.inprocess import services_in_process
    from virtufin.cli.live_stage import _services_file

    monkeypatch.setenv("VIRTUFIN_STATE_DIR", str(tmp_path))
    path = _services_file(tmp_path / "run")
    flags = {
        "services": str(path),
        "bus": "memory",
        "state": "sqlite",
        "state_dir": str(tmp_path),
        "api_keys": (API_KEY,),
    }
    configs = [load_serve_config(n, flags=flags) for n in ("gateway", "workmanager")]
    ready: dict[str, str] = {}
    stop = threading.Event()
    failure: list[BaseException] = []

    async def serve() -> None:
        async with services_in_process(configs) as running:
            problem = await running.wait_healthy(time.monotonic() + 60)
            if problem is not None:
                raise RuntimeError(problem)
            ready.update(running.addresses)
            await asyncio.to_thread(stop.wait)

    def main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while "gateway" not in ready and not failure and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not failure, failure
    yield ready["gateway"]
    stop.set()
    thread.join(30)


def _deployment(step: str = "LIVE") -> Deployment:
    return Deployment(
        id=Deployment.make_id("sma_cross", step, "BT_SMA_CROSS_1A2B3C4D"),
        worker="sma_cross",
        version="0.1.0",
        params={"fast": 10, "slow": 20},
        step=step,  # type: ignore[arg-type]
        scenario="LIVE",
        lanes={"market": "act", "portfolio": "act", "strategy": "act"},
        candidate="BT_SMA_CROSS_1A2B3C4D",
    )


def test_deploy_runs_the_version_and_retire_stops_it(gateway: str) -> None:
    client = GatewayWorkManagerClient(gateway_address=gateway, api_key=API_KEY)
    deployed = client.deploy(_deployment())
    assert deployed.desired == "running"
    assert client.running(worker="sma_cross", step="LIVE") == [deployed]
    assert client.running(worker="sma_cross", step="paper") == []

    retired = client.retire(deployed, reason="rolled back")
    assert (retired.desired, retired.reason) == ("stopped", "rolled back")
    assert client.running(worker="sma_cross", step="LIVE") == []

    again = client.deploy(deployed)  # the worker exists: it is started again, not duplicated
    assert client.running(worker="sma_cross", step="LIVE") == [again]


def test_a_wrong_key_is_refused_clearly(gateway: str) -> None:
    from virtufin.client import ClientError

    client = GatewayWorkManagerClient(gateway_address=gateway, api_key="wrong")
    with pytest.raises(ClientError) as refused:
        client.deploy(_deployment())
    assert refused.value.code.name == "UNAUTHENTICATED"
