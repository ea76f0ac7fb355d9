"""The rendered JetStream stream definitions: their shape, and that a real NATS server
accepts them exactly as written (the same request `nats stream add --config` sends)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest

from virtufin.config import load_services
from virtufin.deploy.streams import DAY_SECONDS, stream_config, stream_specs

ROOT = Path(__file__).resolve().parents[3]


def test_durations_are_nanoseconds_and_limits_are_unbounded() -> None:
    for spec in stream_specs(load_services(ROOT / "services.json")):
        config = stream_config(spec)
        assert config["max_age"] == spec.max_age_secs * 1_000_000_000
        assert config["duplicate_window"] == 120 * 1_000_000_000
        assert spec.max_age_secs >= DAY_SECONDS
        for limit in ("max_msgs", "max_bytes", "max_consumers", "max_msg_size"):
            assert config[limit] == -1


async def _api(nc: Any, verb: str, name: str, body: dict[str, Any] | None = None) -> Any:
    payload = json.dumps(body).encode() if body is not None else b""
    reply = await nc.request(f"$JS.API.STREAM.{verb}.{name}", payload, timeout=5)
    return json.loads(reply.data)


@pytest.mark.nats
async def test_a_nats_server_accepts_every_rendered_stream(nats_server: str) -> None:
    files = sorted((ROOT / "infra/nats/streams").glob("*.json"))
    assert [f.stem for f in files] == [
        "VIRTUFIN_ACT",
        "VIRTUFIN_HYP",
        "VIRTUFIN_INFRA",
        "VIRTUFIN_SC",
    ]
    tag = uuid.uuid4().hex[:10]
    nc = await nats.connect(nats_server)
    created: list[str] = []
    try:
        for file in files:
            config = json.loads(file.read_text())
            # A private name and subject prefix: the shared server may hold the real streams.
            config["name"] = f"T{tag}_{config['name']}"
            config["subjects"] = [f"t{tag}.{s}" for s in config["subjects"]]
            answer = await _api(nc, "CREATE", config["name"], config)
            assert "error" not in answer, f"{file.name}: {answer.get('error')}"
            created.append(config["name"])
            stored = answer["config"]
            for key in ("subjects", "max_age", "duplicate_window", "storage", "retention"):
                assert stored[key] == config[key], f"{file.name}: {key} changed"
        info = await _api(nc, "INFO", created[0])
        assert info["config"]["name"] == created[0]
    finally:
        for name in created:
            await _api(nc, "DELETE", name)
        await nc.close()
