"""Fixtures of the deploy-render tests: the project's inputs and throw-away copies of them."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from virtufin.deploy import render_all

ROOT = Path(__file__).resolve().parents[3]

_NEW_SERVICE: dict[str, Any] = {
    "name": "riskmanager",
    "daprAppId": "virtufin-riskmanager",
    "module": "services.riskmanager",
    "role": "observer",
    "grpc": {"host": "127.0.0.1", "port": 45002, "hosts": []},
    "healthPort": 45001,
    "pubsub": {"pubsubName": "pubsub"},
    "state": {"storeName": "statestore", "keys": []},
    "jobs": {"crons": []},
    "publishes": ["riskmanager.lifecycle", "risk-alerts"],
    "subscribes": ["sc.*.risk.>"],
}


@pytest.fixture
def new_service() -> dict[str, Any]:
    """A services.json entry the project does not have."""
    return copy.deepcopy(_NEW_SERVICE)


@pytest.fixture(scope="session")
def rendered() -> dict[Path, str]:
    """The render of the project's own services.json and versions.env."""
    return render_all(ROOT)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder holding copies of the project's services.json and versions.env."""
    for name in ("services.json", "versions.env"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


@pytest.fixture
def edit_services(project: Path) -> Callable[[Callable[[dict[str, Any]], None]], Path]:
    """Apply an edit to the copy's services.json (a function of the parsed document)."""

    def edit(change: Callable[[dict[str, Any]], None]) -> Path:
        path = project / "services.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        change(data)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        return project

    return edit


@pytest.fixture
def set_versions(project: Path) -> Callable[[Mapping[str, str]], Path]:
    """Rewrite the given KEY=VALUE lines of the copy's versions.env."""

    def change(new: Mapping[str, str]) -> Path:
        path = project / "versions.env"
        lines = []
        for line in path.read_text(encoding="utf-8").splitlines():
            key = line.partition("=")[0]
            lines.append(f"{key}={new[key]}" if key in new else line)
        missing = set(new) - {line.partition("=")[0] for line in lines}
        assert not missing, f"versions.env has no {sorted(missing)}"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return project

    return change


def _doc(files: Mapping[Path, str], rel: str) -> Any:
    text = files[Path(rel)]
    if rel.endswith(".json"):
        return json.loads(text)
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    assert len(docs) == 1, f"{rel} holds {len(docs)} documents"
    return docs[0]


@pytest.fixture(scope="session")
def doc() -> Callable[[Mapping[Path, str], str], Any]:
    """`doc(files, "infra/k8s/x.yaml")`: the single YAML (or JSON) document of a file."""
    return _doc
