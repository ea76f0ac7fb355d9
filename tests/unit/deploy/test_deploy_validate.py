"""Rendered objects against the Kubernetes API models and Dapr's schemas, and the validators
themselves: each one must reject a broken object, or it proves nothing."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from virtufin.deploy.inputs import load_inputs
from virtufin.deploy.validate import (
    validate_dapr_component,
    validate_deployment,
    validate_kubernetes_object,
    validate_kustomization,
    validate_multi_app_run,
    validate_rendered,
    validate_resiliency,
    validate_versions,
)

ROOT = Path(__file__).resolve().parents[3]
Doc = Callable[[Mapping[Path, str], str], Any]
DEPLOYMENT = "infra/k8s/services/gateway-deployment.yaml"


def test_the_whole_render_is_valid(rendered: dict[Path, str]) -> None:
    assert validate_rendered(rendered, load_inputs(ROOT)) == []


@pytest.mark.parametrize(
    "rel",
    [
        "infra/k8s/namespace.yaml",
        "infra/k8s/configmap-services.yaml",
        "infra/k8s/brokers/nats-deployment.yaml",
        "infra/k8s/brokers/redis-service.yaml",
        "infra/k8s/nats-streams-job.yaml",
        DEPLOYMENT,
        "infra/k8s/services/gateway-service.yaml",
    ],
)
def test_each_kind_round_trips_through_its_api_model(
    rendered: dict[Path, str], doc: Doc, rel: str
) -> None:
    assert validate_kubernetes_object(doc(rendered, rel)) == []


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_a_misspelt_field_is_rejected(rendered: dict[Path, str], doc: Doc) -> None:
    broken = doc(rendered, DEPLOYMENT)
    _container(broken)["imagePulPolicy"] = _container(broken).pop("imagePullPolicy")
    problems = validate_kubernetes_object(broken)
    assert any("imagePulPolicy" in p and "unknown or misspelt" in p for p in problems)


def test_a_missing_required_field_is_rejected(rendered: dict[Path, str], doc: Doc) -> None:
    broken = doc(rendered, DEPLOYMENT)
    del _container(broken)["name"]
    problems = validate_kubernetes_object(broken)
    assert any("`name`, must not be `None`" in p for p in problems), problems
    unselected = doc(rendered, DEPLOYMENT)
    del unselected["spec"]["selector"]
    problems = validate_kubernetes_object(unselected)
    assert any("`selector`, must not be `None`" in p for p in problems), problems


def test_a_value_of_the_wrong_type_is_rejected(rendered: dict[Path, str], doc: Doc) -> None:
    broken = doc(rendered, DEPLOYMENT)
    broken["spec"]["template"]["metadata"]["annotations"]["dapr.io/enabled"] = True
    problems = validate_kubernetes_object(broken)
    assert any("dapr.io/enabled" in p for p in problems)


def test_an_unknown_kind_and_a_bad_name_are_rejected(rendered: dict[Path, str], doc: Doc) -> None:
    obj = doc(rendered, "infra/k8s/namespace.yaml")
    assert validate_kubernetes_object({**obj, "kind": "Namespaces"})
    obj["metadata"]["name"] = "Not_A_Label"
    assert any("DNS-1123" in p for p in validate_kubernetes_object(obj))


def test_deployment_rules_beyond_the_schema(rendered: dict[Path, str], doc: Doc) -> None:
    good = doc(rendered, DEPLOYMENT)
    assert validate_deployment(good, dapr=True) == []
    wrong_port = copy.deepcopy(good)
    wrong_port["spec"]["template"]["metadata"]["annotations"]["dapr.io/app-port"] = "1"
    assert any("app-port" in p for p in validate_deployment(wrong_port, dapr=True))
    unselected = copy.deepcopy(good)
    unselected["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "other"
    assert any("does not select" in p for p in validate_deployment(unselected, dapr=True))
    no_volume = copy.deepcopy(good)
    no_volume["spec"]["template"]["spec"]["volumes"].pop()
    assert any("has no volume" in p for p in validate_deployment(no_volume, dapr=True))


def test_the_kustomization_must_list_exactly_the_files() -> None:
    folder = PurePosixPath("infra/k8s")
    files = [folder / "a.yaml", folder / "b.yaml", folder / "kustomization.yaml"]
    good = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["a.yaml", "b.yaml"],
    }
    assert validate_kustomization(good, folder, files) == []
    assert validate_kustomization({**good, "resources": ["a.yaml"]}, folder, files)
    missing = {**good, "resources": ["a.yaml", "b.yaml", "c.yaml"]}
    assert any("c.yaml does not exist" in p for p in validate_kustomization(missing, folder, files))


COMPONENT = "infra/dapr/components/pubsub-jetstream.yaml"


def test_rendered_components_match_daprs_schema(rendered: dict[Path, str], doc: Doc) -> None:
    components = [
        p
        for p in rendered
        if p.is_relative_to("infra/dapr") and p.name not in ("resiliency.yaml", "dapr.yaml")
    ]
    assert len(components) == 4
    for path in components:
        assert validate_dapr_component(doc(rendered, path.as_posix())) == [], path


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (lambda c: c["spec"].update(type="pubsub.jetstrem"), "unknown"),
        (lambda c: c["spec"].update(version="v9"), "unknown"),
        (lambda c: c.update(apiVersion="dapr.io/v1"), "apiVersion/kind"),
        (lambda c: c["spec"]["metadata"][0].update(name="natsUrl"), "natsURL is required"),
        (lambda c: c["spec"]["metadata"][0].update(name="natsUrl"), "'natsUrl' is not a field"),
        (lambda c: c["spec"]["metadata"][1].update(value=5), "must be a string"),
        (
            lambda c: c["spec"]["metadata"][1].update(secretKeyRef={"name": "s", "key": "k"}),
            "exactly one of value, secretKeyRef",
        ),
        (lambda c: c["spec"].update(metadatas=[]), "spec.metadatas: unknown field"),
        (lambda c: c["metadata"].pop("name"), "metadata.name is required"),
    ],
)
def test_a_broken_component_is_rejected(
    rendered: dict[Path, str], doc: Doc, breakage: Callable[[Any], object], expected: str
) -> None:
    component = doc(rendered, COMPONENT)
    breakage(component)
    problems = validate_dapr_component(component)
    assert any(expected in p for p in problems), problems


def test_resiliency_targets_must_name_defined_policies(rendered: dict[Path, str], doc: Doc) -> None:
    inputs = load_inputs(ROOT)
    known = {"components": {"pubsub", "statestore"}, "app_ids": set(inputs.app_ids)}
    resiliency = doc(rendered, "infra/dapr/components/resiliency.yaml")
    assert validate_resiliency(resiliency, **known) == []
    broken = copy.deepcopy(resiliency)
    broken["spec"]["targets"]["components"]["pubsub"]["outbound"]["retry"] = "nope"
    assert any("no policy named 'nope'" in p for p in validate_resiliency(broken, **known))
    stranger = copy.deepcopy(resiliency)
    stranger["spec"]["targets"]["apps"]["virtufin-ghost"] = {"retry": "invokeRetry"}
    assert any("no such app id" in p for p in validate_resiliency(stranger, **known))
    bad_policy = copy.deepcopy(resiliency)
    bad_policy["spec"]["policies"]["retries"]["invokeRetry"]["policy"] = "linear"
    assert validate_resiliency(bad_policy, **known)


def test_the_run_file_rejects_unknown_fields_and_protocols(
    rendered: dict[Path, str], doc: Doc
) -> None:
    run = doc(rendered, "infra/dapr/dapr.yaml")
    assert validate_multi_app_run(run, base=ROOT / "infra/dapr") == []
    run["apps"][0]["appProtocl"] = "grpc"
    run["apps"][1]["appProtocol"] = "tcp"
    run["apps"][2]["appDirPath"] = "../../no-such-folder"
    problems = validate_multi_app_run(run, base=ROOT / "infra/dapr")
    assert any("appProtocl: unknown field" in p for p in problems)
    assert any("appProtocol is not a protocol" in p for p in problems)
    assert any("is not a folder" in p for p in problems)


def test_an_image_not_pinned_by_versions_env_is_rejected(
    rendered: dict[Path, str], doc: Doc
) -> None:
    deployment = doc(rendered, DEPLOYMENT)
    _container(deployment)["image"] = "registry.local/virtufin/gateway:latest"
    deployment["metadata"]["labels"]["app.kubernetes.io/version"] = "9.9.9"
    problems = validate_versions({"x.yaml": [deployment]}, load_inputs(ROOT))
    assert any("gateway:latest is not pinned" in p for p in problems)
    assert any("version label 9.9.9" in p for p in problems)


def test_a_hand_edit_that_breaks_a_file_fails_the_whole_validation(
    rendered: dict[Path, str],
) -> None:
    files = dict(rendered)
    path = Path("infra/k8s/services/gateway-service.yaml")
    files[path] = files[path].replace("targetPort: grpc", "targetPort: grcp")
    problems = validate_rendered(files, load_inputs(ROOT))
    assert any("targetPort grcp is not a container port" in p for p in problems)
    del files[Path(DEPLOYMENT)]
    problems = validate_rendered(files, load_inputs(ROOT))
    assert any("no Deployment with app id virtufin-gateway" in p for p in problems)
