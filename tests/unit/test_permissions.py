"""Lane permissions rendered from services.json (the broker test is in tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtufin.config import ServiceConfig, load_services
from virtufin.errors import ConfigError
from virtufin.permissions import (
    password_variable,
    render_nats_authorization,
    service_permissions,
)

ROOT = Path(__file__).resolve().parents[2]


def _service(role: str, publishes: list[str]) -> ServiceConfig:
    return ServiceConfig.model_validate(
        {
            "name": "svc",
            "daprAppId": "virtufin-svc",
            "module": "services.svc",
            "role": role,
            "grpc": {"port": 9999},
            "publishes": publishes,
        }
    )


def test_connectors_publish_act_and_nobody_else_may() -> None:
    perms = service_permissions(_service("connector", ["act.exchange.>"]))
    assert "act.exchange.>" in perms.publish_allow
    assert "act.exchange.>" not in perms.publish_deny
    with pytest.raises(ConfigError, match="role 'production' may not publish"):
        service_permissions(_service("production", ["act.exchange.binance.>"]))


def test_broad_scenario_patterns_get_sc_live_denied_for_non_production_roles() -> None:
    perms = service_permissions(_service("backtest", ["sc.*.trading.>", "hyp.*.exchange.>"]))
    assert perms.publish_deny == ("sc.LIVE.>",)
    assert "hyp.*.exchange.>" in perms.publish_allow
    with pytest.raises(ConfigError, match=r"lies in 'sc\.LIVE\.>'"):
        service_permissions(_service("backtest", ["sc.LIVE.trading.>"]))
    production = service_permissions(_service("production", ["sc.*.trading.>"]))
    assert production.publish_deny == ()


def test_the_rendered_block_covers_every_service_without_literal_passwords() -> None:
    services = load_services(ROOT / "services.json")
    text = render_nats_authorization(services)
    for svc in services.services:
        assert f'user: "{svc.name}"' in text
        assert f"password: ${password_variable(svc.name)}" in text
    assert 'password: "' not in text
