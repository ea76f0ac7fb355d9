"""The committed infra/ files are exactly what a fresh render produces, and the drift check
notices every way they can stop being so."""

from __future__ import annotations

import json
from pathlib import Path

from virtufin.deploy import check_drift, render_all, write_all

ROOT = Path(__file__).resolve().parents[3]


def test_the_committed_files_match_a_fresh_render() -> None:
    drift = check_drift(ROOT)
    assert drift == [], f"run `virtufin deploy render`: these files drifted: {drift}"


def test_write_all_writes_everything_once_then_nothing(project: Path) -> None:
    written = write_all(project)
    assert sorted(p.relative_to(project) for p in written) == sorted(render_all(project))
    assert all(p.is_absolute() for p in written)
    assert write_all(project) == []
    assert check_drift(project) == []


def test_drift_lists_edited_missing_and_stray_files(project: Path) -> None:
    write_all(project)
    edited = project / "infra/k8s/services/gateway-deployment.yaml"
    edited.write_text(edited.read_text().replace("replicas: 1", "replicas: 3"))
    missing = project / "infra/dapr/dapr.yaml"
    missing.unlink()
    stray = project / "infra/k8s/services/old-service.yaml"
    stray.write_text("# left over\n")
    expected = [
        "infra/dapr/dapr.yaml",
        "infra/k8s/services/gateway-deployment.yaml",
        "infra/k8s/services/old-service.yaml",
    ]
    assert check_drift(project) == expected

    changed = write_all(project)

    assert sorted(p.relative_to(project).as_posix() for p in changed) == expected
    assert not stray.exists()
    assert "replicas: 1" in edited.read_text()
    assert check_drift(project) == []


def test_a_changed_input_is_drift_until_rendered_again(project: Path) -> None:
    write_all(project)
    versions = project / "versions.env"
    text = versions.read_text().replace("VIRTUFIN_VERSION=0.1.0", "VIRTUFIN_VERSION=0.1.1")
    versions.write_text(text)
    drift = check_drift(project)
    assert "infra/k8s/services/gateway-deployment.yaml" in drift
    assert "infra/dapr/components/pubsub-jetstream.yaml" in drift
    write_all(project)
    assert check_drift(project) == []


def test_removing_a_service_removes_its_files(project: Path) -> None:
    write_all(project)
    services = project / "services.json"
    data = json.loads(services.read_text())
    data["services"] = [s for s in data["services"] if s["name"] != "execution"]
    services.write_text(json.dumps(data))
    assert "infra/k8s/services/execution-deployment.yaml" in check_drift(project)

    removed = write_all(project)

    assert project / "infra/k8s/services/execution-deployment.yaml" in removed
    assert not (project / "infra/k8s/services/execution-service.yaml").exists()
    assert check_drift(project) == []
