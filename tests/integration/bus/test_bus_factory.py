"""`create_bus` picks the adapter `Settings.bus` names, and only it imports a broker client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from virtufin.bus.factory import create_bus
from virtufin.bus.memory import MemoryBus
from virtufin.bus.validation import LaneValidator
from virtufin.config import Settings
from virtufin.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


async def test_memory_is_the_default() -> None:
    validator = LaneValidator()
    bus = await create_bus(Settings(), validator=validator)
    assert isinstance(bus, MemoryBus)
    assert bus.validator is validator


@pytest.mark.nats
async def test_nats_connects_with_the_settings_url_and_name(nats_server: str) -> None:
    from virtufin.bus.nats import NatsBus

    bus = await create_bus(Settings(bus="nats", nats_url=nats_server), name="factory-test")
    try:
        assert isinstance(bus, NatsBus)
        assert bus.url == nats_server
        assert bus.client_name == "factory-test"
    finally:
        await bus.close()


async def test_dapr_without_its_adapter_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "virtufin.bus.dapr", None)  # import fails
    with pytest.raises(ConfigError, match="DaprBus"):
        await create_bus(Settings(bus="dapr"))


def test_core_modules_do_not_import_nats() -> None:
    code = (
        "import sys, virtufin.bus, virtufin.bus.factory, virtufin.bus.memory\n"
        "assert 'nats' not in sys.modules, sorted(m for m in sys.modules if 'nats' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
