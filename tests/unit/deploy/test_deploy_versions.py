"""versions.env is the one place a version is written: changing one changes it everywhere
(rendered in a temporary copy), and nothing rendered carries a version of its own."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from virtufin.config import load_versions
from virtufin.deploy import render_all
from virtufin.deploy.inputs import load_inputs
from virtufin.deploy.validate import validate_rendered

ROOT = Path(__file__).resolve().parents[3]
Doc = Callable[[Mapping[Path, str], str], Any]

NEW = {
    "VIRTUFIN_VERSION": "0.2.0",
    "API_VERSION": "0.2.0",
    "LIBRARY_VERSION": "0.2.0",
    "DAPR_RUNTIME_VERSION": "1.17.2",
    "NATS_SERVER_VERSION": "2.11.4",
    "REDIS_VERSION": "7.4.3",
    "IMAGE_REGISTRY": "ghcr.io/acme/virtufin",
}


def test_every_rendered_version_comes_from_versions_env(rendered: dict[Path, str]) -> None:
    versions = load_versions(ROOT / "versions.env")
    known = {versions[k] for k in NEW} | {versions["PYTHON_VERSION"]}
    for path, text in rendered.items():
        for found in re.findall(r"(?<![\w.])\d+\.\d+\.\d+(?![\w.])", text):
            assert found in known, f"{path} carries version {found} not taken from versions.env"


def test_changing_versions_env_changes_every_rendered_file(
    set_versions: Callable[[Mapping[str, str]], Path], doc: Doc, rendered: dict[Path, str]
) -> None:
    old = load_versions(ROOT / "versions.env")
    project = set_versions(NEW)
    files = render_all(project)

    everything = "\n".join(files.values())
    for key in NEW:
        assert old[key] not in everything, f"{old[key]} ({key}) survived the change"
    assert set(files) == set(rendered)

    deployment = doc(files, "infra/k8s/services/marketdata-deployment.yaml")
    pod = deployment["spec"]["template"]
    assert pod["spec"]["containers"][0]["image"] == "ghcr.io/acme/virtufin/marketdata:0.2.0"
    assert pod["metadata"]["annotations"]["dapr.io/sidecar-image"] == "daprio/daprd:1.17.2"
    assert pod["metadata"]["labels"]["app.kubernetes.io/version"] == "0.2.0"
    nats = doc(files, "infra/k8s/brokers/nats-deployment.yaml")
    assert nats["spec"]["template"]["spec"]["containers"][0]["image"] == "nats:2.11.4-alpine"
    redis = doc(files, "infra/k8s/brokers/redis-deployment.yaml")
    assert redis["spec"]["template"]["spec"]["containers"][0]["image"] == "redis:7.4.3-alpine"
    job = doc(files, "infra/k8s/nats-streams-job.yaml")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/acme/virtufin/nats-streams:0.2.0"
    )
    component = doc(files, "infra/dapr/components/pubsub-jetstream.yaml")
    assert component["metadata"]["labels"]["virtufin.io/dapr-runtime-version"] == "1.17.2"
    assert "--runtime-version 1.17.2" in files[Path("infra/dapr/dapr.yaml")]

    assert validate_rendered(files, load_inputs(project)) == []
    assert validate_rendered(files, load_inputs(ROOT)), "old versions.env must reject the render"
