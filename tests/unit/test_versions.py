"""`versions.env` is the one place a version is written: pyproject, uv.lock and services.json
must agree with it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from virtufin import __version__
from virtufin.config import load_services, load_versions

ROOT = Path(__file__).resolve().parents[2]


def _lock_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {pkg["name"]: pkg["version"] for pkg in lock["package"] if "version" in pkg}


def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for dep in project["dependencies"]:
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^;,\s]+)$", dep)
        if match:
            pins[match.group(1).lower()] = match.group(3)
    return pins


def test_every_python_pin_in_versions_env_matches_pyproject_and_the_lock() -> None:
    pins = load_versions(ROOT / "versions.env").python_pins()
    assert pins, "versions.env pins no Python package"
    pyproject = _pyproject_pins()
    lock = _lock_versions()
    for name, version in pins.items():
        assert pyproject.get(name) == version, f"pyproject.toml pins {name} differently"
        assert lock.get(name) == version, f"uv.lock resolves {name} to {lock.get(name)}"


def test_every_exact_pin_in_pyproject_is_in_versions_env() -> None:
    pins = load_versions(ROOT / "versions.env").python_pins()
    missing = sorted(set(_pyproject_pins()) - set(pins))
    assert not missing, f"pinned in pyproject.toml but not in versions.env: {missing}"


def test_platform_version_agrees_everywhere() -> None:
    versions = load_versions(ROOT / "versions.env")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert versions["VIRTUFIN_VERSION"] == project["version"] == __version__
    assert _lock_versions()["virtufin"] == project["version"]


def test_services_json_agrees_with_versions_and_the_code() -> None:
    services = load_services(ROOT / "services.json")
    for svc in services.services:
        assert svc.dapr_app_id == f"virtufin-{svc.name}"
        module = svc.module.split(":")[0]
        assert module.startswith("services."), module
    uv = load_versions(ROOT / "versions.env")["UV_VERSION"]
    assert re.search(rf'"uv=={uv}"|uv==\$\(UV_VERSION\)', (ROOT / "Makefile").read_text())
