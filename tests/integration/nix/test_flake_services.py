"""A service added to services.json gets a package, an app and an image from the flake with
no other edit (evaluated in a temporary copy)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

RISK = {
    "name": "riskmanager",
    "daprAppId": "virtufin-riskmanager",
    "module": "services.riskmanager",
    "role": "observer",
    "grpc": {"host": "127.0.0.1", "port": 45002, "hosts": []},
    "healthPort": 45001,
    "pubsub": {"pubsubName": "pubsub"},
    "state": {"storeName": "statestore", "keys": []},
    "jobs": {"crons": []},
    "publishes": ["riskmanager.lifecycle"],
    "subscribes": [],
}


def _add_service(copy: Path, service: dict[str, Any]) -> None:
    path = copy / "services.json"
    data = json.loads(path.read_text())
    data["services"].append(service)
    path.write_text(json.dumps(data, indent=2))


def test_a_new_service_gets_a_package_an_app_and_an_image(
    nix: Any, flake_copy: Callable[[], Path]
) -> None:
    copy = flake_copy()
    _add_service(copy, RISK)
    shown = json.loads(nix.run("flake", "show", "--json", flake=copy).stdout)
    for system, packages in shown["packages"].items():
        assert packages["riskmanager"]["name"] == "virtufin-riskmanager"
        assert shown["apps"][system]["riskmanager"]["type"] == "app"
        assert ("riskmanager-image" in packages) == system.endswith("-linux")
    image = nix.eval(
        copy,
        "packages.x86_64-linux.riskmanager-image",
        apply="p: { inherit (p) imageName imageTag; inherit (p.virtufinImage.config) Cmd; "
        "ports = builtins.attrNames p.virtufinImage.config.ExposedPorts; }",
    )
    assert image["imageName"].endswith("/riskmanager")
    assert image["Cmd"] == ["virtufin", "serve", "riskmanager"]
    assert image["ports"] == ["45001/tcp", "45002/tcp"]
    assert nix.eval(copy, "checks.x86_64-linux.flake-eval.failures") == []
    assert "riskmanager" in nix.eval(copy, "lib.virtufin.services")


def test_the_evaluation_tests_notice_a_missing_service_output(
    nix: Any, flake_copy: Callable[[], Path]
) -> None:
    copy = flake_copy()
    per_system = copy / "nix/per-system.nix"
    text = per_system.read_text()
    broken = text.replace(
        "}) services\n  );\n  serviceImages", "}) (builtins.tail services)\n  );\n  serviceImages"
    )
    assert broken != text, "the mutation no longer applies: update this test"
    per_system.write_text(broken)
    failures = nix.eval(copy, "checks.x86_64-linux.flake-eval.failures")
    first = json.loads((copy / "services.json").read_text())["services"][0]["name"]
    assert f"packages.{first} is missing" in failures
    assert f"apps.{first} is missing" in failures


def test_a_service_named_like_a_platform_package_is_refused(
    nix: Any, flake_copy: Callable[[], Path]
) -> None:
    copy = flake_copy()
    _add_service(copy, {**RISK, "name": "pipelines", "daprAppId": "virtufin-pipelines"})
    error = nix.fails(copy, "packages.x86_64-linux", apply="builtins.attrNames")
    assert "pipelines clash with the flake's own packages" in error
