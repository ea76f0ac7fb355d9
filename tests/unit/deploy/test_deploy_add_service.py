"""A service added to services.json appears everywhere, with no other edit: rendered in a
temporary copy of the project's input files."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from virtufin.deploy import render_all
from virtufin.deploy.inputs import load_inputs
from virtufin.deploy.validate import validate_rendered

ROOT = Path(__file__).resolve().parents[3]
Doc = Callable[[Mapping[Path, str], str], Any]


def _add(new_service: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["services"].append(new_service)

    return change


def test_a_new_service_appears_in_every_rendered_file(
    edit_services: Callable[[Callable[[dict[str, Any]], None]], Path],
    doc: Doc,
    new_service: dict[str, Any],
) -> None:
    project = edit_services(_add(new_service))
    files = render_all(project)
    name, app_id = new_service["name"], new_service["daprAppId"]

    new_files = {p.as_posix() for p in files} - {p.as_posix() for p in render_all(ROOT)}
    assert new_files == {
        f"infra/k8s/services/{name}-deployment.yaml",
        f"infra/k8s/services/{name}-service.yaml",
    }
    deployment = doc(files, f"infra/k8s/services/{name}-deployment.yaml")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["dapr.io/app-id"] == app_id
    assert annotations["dapr.io/app-port"] == "45002"
    assert (
        f"services/{name}-service.yaml" in doc(files, "infra/k8s/kustomization.yaml")["resources"]
    )
    assert f'"{name}"' in doc(files, "infra/k8s/configmap-services.yaml")["data"]["services.json"]
    gateway = doc(files, "infra/k8s/services/gateway-deployment.yaml")
    env = {
        e["name"]: e["value"] for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["VIRTUFIN_RISKMANAGER_GRPC_HOST"] == "riskmanager.virtufin.svc"

    for rel in (
        "infra/dapr/components/pubsub-jetstream.yaml",
        "infra/dapr/components/statestore-redis.yaml",
        "infra/dapr/alternatives/pubsub-redis.yaml",
        "infra/dapr/alternatives/statestore-postgresql.yaml",
        "infra/k8s/dapr/pubsub-jetstream.yaml",
        "infra/k8s/dapr/statestore-redis.yaml",
    ):
        assert app_id in doc(files, rel)["scopes"], rel
    for rel in ("infra/dapr/components/resiliency.yaml", "infra/k8s/dapr/resiliency.yaml"):
        resiliency = doc(files, rel)
        assert app_id in resiliency["scopes"]
        assert app_id in resiliency["spec"]["targets"]["apps"]
    run = doc(files, "infra/dapr/dapr.yaml")
    assert [a["command"] for a in run["apps"] if a["appID"] == app_id] == [
        ["virtufin", "serve", name]
    ]
    infra = doc(files, "infra/nats/streams/VIRTUFIN_INFRA.json")["subjects"]
    assert f"{name}.>" in infra
    assert "risk-alerts" in infra
    assert (
        doc(files, "infra/k8s/nats-streams-configmap.yaml")["data"]["VIRTUFIN_INFRA.json"]
        == (files[Path("infra/nats/streams/VIRTUFIN_INFRA.json")])
    )

    assert validate_rendered(files, load_inputs(project)) == []
