"""Validate rendered deploy files: Kubernetes API models, Dapr schemas, cross-references.

Every check returns a list of problems (``"<file>: <where>: <what>"``); an empty list means
valid. Kubernetes objects are deserialized into the `kubernetes` client's models (a required
field left out raises there) and serialized back: a field the API does not know, or a value
of the wrong type, does not survive the round trip and is reported. Dapr resources are
checked against the fields of Dapr's component, resiliency and multi-app run schemas.

The `kubernetes` client is a development dependency; it is imported on first use.

Example:
    >>> validate_rendered(render_all(Path(".")), load_inputs(Path(".")))
    []
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final

from virtufin.deploy._yaml import GENERATED_BY, load_yaml_documents
from virtufin.deploy.images import (
    NATS_STREAMS_IMAGE,
    daprd_image,
    nats_image,
    redis_image,
    service_image,
)
from virtufin.deploy.inputs import DeployInputs

__all__ = [
    "COMPONENT_SCHEMAS",
    "KUBERNETES_MODELS",
    "ComponentSchema",
    "validate_dapr_component",
    "validate_deployment",
    "validate_kubernetes_object",
    "validate_kustomization",
    "validate_multi_app_run",
    "validate_rendered",
    "validate_resiliency",
    "validate_versions",
]

KUBERNETES_MODELS: Final[Mapping[tuple[str, str], str]] = {
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("batch/v1", "Job"): "V1Job",
}
_DAPR_API: Final = "dapr.io/v1alpha1"
_KUSTOMIZE_API: Final = "kustomize.config.k8s.io/v1beta1"
_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_VALUE: Final = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_PORT_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?$")
_DURATION: Final = re.compile(r"^\d+(ms|s|m|h)$")

_JETSTREAM_FIELDS: Final = frozenset(
    {
        "natsURL", "jwt", "seedKey", "tls_client_cert", "tls_client_key", "token", "name",
        "streamName", "durableName", "queueGroupName", "startSequence", "startTime",
        "deliverAll", "flowControl", "ackWait", "maxDeliver", "backOff", "maxAckPending",
        "replicas", "memoryStorage", "rateLimit", "heartbeat", "ackPolicy", "deliverPolicy",
        "domain", "apiPrefix", "concurrency",
    }
)  # fmt: skip
_REDIS_COMMON: Final = frozenset(
    {
        "redisHost", "redisPassword", "redisUsername", "useEntraID", "enableTLS", "clientCert",
        "clientKey", "failover", "sentinelMasterName", "redisType", "redisDB",
        "redisMaxRetries", "redisMinRetryInterval", "redisMaxRetryInterval", "dialTimeout",
        "readTimeout", "writeTimeout", "poolSize", "poolTimeout", "maxConnAge", "minIdleConns",
        "idleCheckFrequency", "idleTimeout",
    }
)  # fmt: skip
_REDIS_PUBSUB_FIELDS: Final = _REDIS_COMMON | {
    "consumerID", "redeliverInterval", "processingTimeout", "queueDepth", "concurrency",
    "maxLenApprox", "streamTTL",
}  # fmt: skip
_REDIS_STATE_FIELDS: Final = _REDIS_COMMON | {
    "maxRetries", "maxRetryBackoff", "ttlInSeconds", "queryIndexes", "actorStateStore",
    "keyPrefix", "outboxPublishPubsub", "outboxPublishTopic", "outboxPubsub",
    "outboxDiscardWhenMissingState",
}  # fmt: skip
_POSTGRES_COMMON: Final = frozenset(
    {
        "connectionString", "host", "hostaddr", "port", "database", "user", "password",
        "sslRootCert", "timeout", "metadataTableName", "cleanupInterval", "maxConns",
        "connectionMaxIdleTime", "queryExecMode", "actorStateStore", "useAzureAD", "useAWSIAM",
        "awsRegion", "awsAccessKey", "awsSecretKey", "outboxPublishPubsub",
        "outboxPublishTopic", "outboxPubsub", "outboxDiscardWhenMissingState",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ComponentSchema:
    """The metadata fields one component type and version accepts, and those it needs."""

    fields: frozenset[str]
    required: frozenset[str] = field(default_factory=frozenset)


COMPONENT_SCHEMAS: Final[Mapping[tuple[str, str], ComponentSchema]] = {
    ("pubsub.jetstream", "v1"): ComponentSchema(_JETSTREAM_FIELDS, frozenset({"natsURL"})),
    ("pubsub.redis", "v1"): ComponentSchema(_REDIS_PUBSUB_FIELDS, frozenset({"redisHost"})),
    ("state.redis", "v1"): ComponentSchema(_REDIS_STATE_FIELDS, frozenset({"redisHost"})),
    ("state.postgresql", "v1"): ComponentSchema(_POSTGRES_COMMON | {"tableName", "keyPrefix"}),
    ("state.postgresql", "v2"): ComponentSchema(_POSTGRES_COMMON | {"tablePrefix"}),
    ("secretstores.kubernetes", "v1"): ComponentSchema(frozenset({"defaultNamespace"})),
}


# --------------------------------------------------------------------------- Kubernetes


class _Response:
    """What `ApiClient.deserialize` reads: an object with the JSON body in `data`."""

    def __init__(self, body: Any) -> None:
        self.data = json.dumps(body)


def _diff(want: Any, got: Any, where: str) -> list[str]:
    if isinstance(want, Mapping) and isinstance(got, Mapping):
        problems = []
        for key, value in want.items():
            path = f"{where}.{key}" if where else str(key)
            if key not in got:
                problems.append(f"{path}: not a field of the API model (unknown or misspelt)")
            else:
                problems.extend(_diff(value, got[key], path))
        problems.extend(f"{where}.{key}: added by the model" for key in got if key not in want)
        return problems
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{where}: list length {len(want)} became {len(got)}"]
        return [
            p
            for i, (a, b) in enumerate(zip(want, got, strict=True))
            for p in _diff(a, b, f"{where}[{i}]")
        ]
    if type(want) is not type(got) or want != got:
        return [f"{where}: {want!r} does not survive the API model (read back as {got!r})"]
    return []


def validate_kubernetes_object(obj: Mapping[str, Any]) -> list[str]:
    """Problems of one Kubernetes object against the API model of its kind."""
    from kubernetes.client import ApiClient  # type: ignore[import-untyped]

    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    model = KUBERNETES_MODELS.get(key)
    if model is None:
        return [f"{key[0]}/{key[1]}: not a kind this project renders"]
    problems = []
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        problems.append(f"metadata.name: {name!r} is not a DNS-1123 label")
    for label, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            problems.append(f"metadata.labels.{label}: {value!r} is not a valid label value")
    plain = json.loads(json.dumps(obj))
    with ApiClient() as client:
        try:
            parsed = client.deserialize(_Response(plain), model)
        except (ValueError, TypeError) as exc:
            return [*problems, f"{model}: {exc}"]
        back = client.sanitize_for_serialization(parsed)
    problems.extend(_diff(plain, back, ""))
    return problems


def _containers(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {})
    return list(pod.get("containers", []))


def validate_deployment(obj: Mapping[str, Any], *, dapr: bool) -> list[str]:
    """Rules the schema cannot express: selectors, probes, ports, mounts, Dapr annotations."""
    problems: list[str] = []
    spec = obj.get("spec", {})
    template = spec.get("template", {})
    pod_labels = template.get("metadata", {}).get("labels", {})
    for key, value in spec.get("selector", {}).get("matchLabels", {}).items():
        if pod_labels.get(key) != value:
            problems.append(f"spec.selector: {key}={value} does not select the pod template")
    volumes = {v["name"] for v in template.get("spec", {}).get("volumes", [])}
    ports: dict[str, int] = {}
    for c in _containers(obj):
        for port in c.get("ports", []):
            if not _PORT_NAME.match(port.get("name", "")):
                problems.append(f"container {c['name']}: port name {port.get('name')!r}")
            ports[port.get("name", "")] = port["containerPort"]
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(probe_name)
            if probe is None:
                if dapr:
                    problems.append(f"container {c['name']}: no {probe_name}")
                continue
            grpc = probe.get("grpc")
            if grpc is not None and grpc.get("port") not in ports.values():
                problems.append(f"container {c['name']}: {probe_name} port is not exposed")
        for mount in c.get("volumeMounts", []):
            if mount["name"] not in volumes:
                problems.append(f"container {c['name']}: mount {mount['name']!r} has no volume")
    annotations = template.get("metadata", {}).get("annotations", {})
    if dapr:
        expected = {"dapr.io/enabled": "true", "dapr.io/app-protocol": "grpc"}
        for key, value in expected.items():
            if annotations.get(key) != value:
                problems.append(f"annotation {key} must be {value!r}")
        if not annotations.get("dapr.io/app-id"):
            problems.append("annotation dapr.io/app-id is missing")
        if annotations.get("dapr.io/app-port") != str(ports.get("grpc")):
            problems.append("annotation dapr.io/app-port is not the container's grpc port")
    return problems


def validate_kustomization(
    obj: Mapping[str, Any], folder: PurePosixPath, files: Iterable[PurePosixPath]
) -> list[str]:
    """The kustomization lists every other file of its folder, once, and nothing else."""
    problems: list[str] = []
    if obj.get("apiVersion") != _KUSTOMIZE_API or obj.get("kind") != "Kustomization":
        problems.append(f"apiVersion/kind must be {_KUSTOMIZE_API} Kustomization")
    listed = list(obj.get("resources", []))
    if len(listed) != len(set(listed)):
        problems.append("resources lists a file twice")
    present = {
        f.relative_to(folder).as_posix()
        for f in files
        if f.is_relative_to(folder) and f.name != "kustomization.yaml"
    }
    problems.extend(f"resources: {r} does not exist" for r in sorted(set(listed) - present))
    problems.extend(f"{p}: not listed in resources" for p in sorted(present - set(listed)))
    return problems


# --------------------------------------------------------------------------- Dapr


def _check_keys(obj: Mapping[str, Any], allowed: set[str], where: str) -> list[str]:
    return [f"{where}{key}: unknown field" for key in obj if key not in allowed]


def validate_dapr_component(obj: Mapping[str, Any]) -> list[str]:
    """Problems of one `dapr.io/v1alpha1` Component against Dapr's component schema."""
    problems = _check_keys(obj, {"apiVersion", "kind", "metadata", "spec", "scopes", "auth"}, "")
    if obj.get("apiVersion") != _DAPR_API or obj.get("kind") != "Component":
        problems.append(f"apiVersion/kind must be {_DAPR_API} Component")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
        return [*problems, "metadata.name is required"]
    problems += _check_keys(meta, {"name", "namespace", "labels", "annotations"}, "metadata.")
    if not _DNS_LABEL.match(meta["name"]):
        problems.append(f"metadata.name: {meta['name']!r} is not a DNS-1123 label")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return [*problems, "spec is required"]
    problems += _check_keys(
        spec, {"type", "version", "metadata", "initTimeout", "ignoreErrors"}, "spec."
    )
    schema = COMPONENT_SCHEMAS.get((str(spec.get("type")), str(spec.get("version"))))
    if schema is None:
        return [*problems, f"spec.type/version {spec.get('type')}/{spec.get('version')} unknown"]
    items = spec.get("metadata", [])
    if not isinstance(items, list):
        return [*problems, "spec.metadata must be a list"]
    names: list[str] = []
    for i, item in enumerate(items):
        where = f"spec.metadata[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            problems.append(f"{where}: needs a name")
            continue
        names.append(item["name"])
        problems += _check_keys(item, {"name", "value", "secretKeyRef"}, f"{where}.")
        if ("value" in item) == ("secretKeyRef" in item):
            problems.append(f"{where} ({item['name']}): exactly one of value, secretKeyRef")
        elif "value" in item and not isinstance(item["value"], str):
            problems.append(f"{where} ({item['name']}): value must be a string")
        elif "secretKeyRef" in item:
            ref = item["secretKeyRef"]
            if not isinstance(ref, Mapping) or set(ref) != {"name", "key"}:
                problems.append(f"{where} ({item['name']}): secretKeyRef needs name and key")
            elif "auth" not in obj and meta.get("namespace") is not None:
                problems.append(f"{where} ({item['name']}): secretKeyRef without auth")
        if item["name"] not in schema.fields:
            problems.append(f"{where}: {item['name']!r} is not a field of {spec['type']}")
    if len(names) != len(set(names)):
        problems.append("spec.metadata: a field is set twice")
    problems.extend(f"spec.metadata: {r} is required" for r in sorted(schema.required - set(names)))
    scopes = obj.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        problems.append("scopes must be a list of app ids")
    return problems


def validate_resiliency(
    obj: Mapping[str, Any], *, components: set[str], app_ids: set[str]
) -> list[str]:
    """A Resiliency resource: policy shapes, and every target naming a defined policy."""
    problems = _check_keys(obj, {"apiVersion", "kind", "metadata", "spec", "scopes"}, "")
    if obj.get("apiVersion") != _DAPR_API or obj.get("kind") != "Resiliency":
        problems.append(f"apiVersion/kind must be {_DAPR_API} Resiliency")
    spec = obj.get("spec", {})
    policies = spec.get("policies", {})
    problems += _check_keys(policies, {"timeouts", "retries", "circuitBreakers"}, "policies.")
    timeouts = policies.get("timeouts", {})
    retries = policies.get("retries", {})
    breakers = policies.get("circuitBreakers", {})
    problems += [f"timeouts.{k}: {v!r}" for k, v in timeouts.items() if not _DURATION.match(v)]
    for name, retry in retries.items():
        problems += _check_keys(
            retry, {"policy", "duration", "maxInterval", "maxRetries", "matching"}, f"{name}."
        )
        if retry.get("policy") not in ("constant", "exponential"):
            problems.append(f"retries.{name}.policy must be constant or exponential")
    for name, breaker in breakers.items():
        problems += _check_keys(breaker, {"maxRequests", "interval", "timeout", "trip"}, f"{name}.")
        if "trip" not in breaker:
            problems.append(f"circuitBreakers.{name}: trip is required")

    def refs(target: Mapping[str, Any], where: str) -> list[str]:
        found = _check_keys(target, {"timeout", "retry", "circuitBreaker"}, f"{where}.")
        for key, pool in (("timeout", timeouts), ("retry", retries), ("circuitBreaker", breakers)):
            if key in target and target[key] not in pool:
                found.append(f"{where}.{key}: no policy named {target[key]!r}")
        return found

    targets = spec.get("targets", {})
    problems += _check_keys(targets, {"apps", "actors", "components"}, "targets.")
    for app, target in targets.get("apps", {}).items():
        if app not in app_ids:
            problems.append(f"targets.apps.{app}: no such app id")
        problems += refs(target, f"targets.apps.{app}")
    for comp, target in targets.get("components", {}).items():
        if comp not in components:
            problems.append(f"targets.components.{comp}: no such component")
        problems += _check_keys(target, {"inbound", "outbound"}, f"targets.components.{comp}.")
        for direction, sub in target.items():
            problems += refs(sub, f"targets.components.{comp}.{direction}")
    return problems


_RUN_APP_FIELDS: Final = frozenset(
    {
        "appID", "appDirPath", "appPort", "appProtocol", "command", "env", "resourcesPath",
        "resourcesPaths", "configFilePath", "appChannelAddress", "appHealthCheckPath",
        "enableAppHealthCheck", "appHealthProbeInterval", "appHealthProbeTimeout",
        "appHealthThreshold", "daprHTTPPort", "daprGRPCPort", "daprInternalGRPCPort",
        "metricsPort", "logLevel", "appLogDestination", "daprdLogDestination", "runtimePath",
        "appMaxConcurrency", "placementHostAddress", "schedulerHostAddress",
        "containerImage", "containerImagePullPolicy", "createService",
    }
)  # fmt: skip


def validate_multi_app_run(obj: Mapping[str, Any], *, base: Path | None = None) -> list[str]:
    """A `dapr run -f` file; with `base` (its folder), app folders must exist."""
    problems = _check_keys(obj, {"version", "common", "apps"}, "")
    if obj.get("version") != 1:
        problems.append("version must be 1")
    common = obj.get("common", {})
    problems += _check_keys(common, set(_RUN_APP_FIELDS) - {"appID", "appDirPath"}, "common.")
    apps = obj.get("apps", [])
    ids = [app.get("appID") for app in apps]
    if len(ids) != len(set(ids)):
        problems.append("apps: an appID is used twice")
    for app in apps:
        where = f"apps[{app.get('appID')}]"
        problems += _check_keys(app, set(_RUN_APP_FIELDS), f"{where}.")
        if not isinstance(app.get("appDirPath"), str):
            problems.append(f"{where}.appDirPath is required")
        elif base is not None and not (base / app["appDirPath"]).is_dir():
            problems.append(f"{where}.appDirPath: {app['appDirPath']} is not a folder")
        if app.get("appProtocol") not in ("http", "grpc", "https", "grpcs", "h2c"):
            problems.append(f"{where}.appProtocol is not a protocol Dapr knows")
        if not isinstance(app.get("appPort"), int):
            problems.append(f"{where}.appPort must be an integer")
        command = app.get("command")
        if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
            problems.append(f"{where}.command must be a list of strings")
        env = {**common.get("env", {}), **app.get("env", {})}
        problems += [
            f"{where}.env.{k}: not a string" for k, v in env.items() if not isinstance(v, str)
        ]
    return problems


# --------------------------------------------------------------------------- versions


def _walk_images(obj: Any) -> Iterable[str]:
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from _walk_images(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _walk_images(item)


def _walk_labels(obj: Any, key: str) -> Iterable[str]:
    if isinstance(obj, Mapping):
        for k, value in obj.items():
            if k in ("labels", "annotations") and isinstance(value, Mapping) and key in value:
                yield str(value[key])
            yield from _walk_labels(value, key)
    elif isinstance(obj, list):
        for item in obj:
            yield from _walk_labels(item, key)


def validate_versions(documents: Mapping[str, Sequence[Any]], inputs: DeployInputs) -> list[str]:
    """Every image, version label and sidecar pin agrees with versions.env.

    Args:
        documents: file name → its parsed YAML documents.
    """
    versions = inputs.versions
    allowed = {service_image(s.name, versions) for s in inputs.services.services}
    allowed |= {service_image(NATS_STREAMS_IMAGE, versions), nats_image(versions)}
    allowed.add(redis_image(versions))
    problems: list[str] = []
    for name, docs in documents.items():
        for doc in docs:
            problems += [
                f"{name}: image {i} is not pinned by versions.env"
                for i in _walk_images(doc)
                if i not in allowed
            ]
            for value in _walk_labels(doc, "app.kubernetes.io/version"):
                if value != versions["VIRTUFIN_VERSION"]:
                    problems.append(f"{name}: version label {value} is not VIRTUFIN_VERSION")
            for value in _walk_labels(doc, "dapr.io/sidecar-image"):
                if value != daprd_image(versions):
                    problems.append(f"{name}: sidecar {value} is not DAPR_RUNTIME_VERSION")
            for value in _walk_labels(doc, "virtufin.io/dapr-runtime-version"):
                if value != versions["DAPR_RUNTIME_VERSION"]:
                    problems.append(f"{name}: Dapr runtime label {value} is not versions.env's")
    return problems


# --------------------------------------------------------------------------- everything


def _nats_auth_problems(path: PurePosixPath, text: str, inputs: DeployInputs) -> list[str]:
    problems = []
    if not text.startswith(f"# Generated by `{GENERATED_BY}`"):
        problems.append(f"{path}: missing the generated-file header")
    for svc in inputs.services.services:
        if f'user: "{svc.name}"' not in text:
            problems.append(f"{path}: no broker user for service {svc.name!r}")
    if text.count("{") != text.count("}"):
        problems.append(f"{path}: unbalanced braces")
    return problems


def validate_rendered(files: Mapping[Path, str], inputs: DeployInputs) -> list[str]:
    """Validate a whole render (`render_all` output): every file, then cross-references."""
    problems: list[str] = []
    parsed: dict[str, list[Any]] = {}
    posix = {PurePosixPath(p.as_posix()): text for p, text in files.items()}
    for path, text in posix.items():
        if path.suffix == ".json":
            parsed[path.as_posix()] = [json.loads(text)]
            continue
        if path.suffix == ".conf":  # the NATS authorization block (virtufin.permissions)
            problems += _nats_auth_problems(path, text, inputs)
            continue
        if not text.startswith(f"# Generated by `{GENERATED_BY}`"):
            problems.append(f"{path}: missing the generated-file header")
        parsed[path.as_posix()] = load_yaml_documents(text)

    components: set[str] = set()
    app_ids = set(inputs.app_ids)
    deployments: list[Mapping[str, Any]] = []
    services: list[tuple[str, Mapping[str, Any]]] = []
    resiliencies: list[tuple[str, Mapping[str, Any]]] = []
    for name, docs in parsed.items():
        for doc in docs:
            where = f"{name}: "
            kind = doc.get("kind") if isinstance(doc, Mapping) else None
            if name.endswith("/dapr.yaml"):
                problems += [where + p for p in validate_multi_app_run(doc)]
                ids = {a["appID"] for a in doc.get("apps", [])}
                if ids != app_ids:
                    problems.append(f"{where}apps {sorted(ids)} are not services.json's")
            elif name.endswith(".json"):
                continue
            elif kind == "Kustomization":
                folder = PurePosixPath(name).parent
                problems += [where + p for p in validate_kustomization(doc, folder, posix)]
            elif kind == "Component":
                problems += [where + p for p in validate_dapr_component(doc)]
                components.add(doc["metadata"]["name"])
            elif kind == "Resiliency":
                resiliencies.append((name, doc))
            else:
                problems += [where + p for p in validate_kubernetes_object(doc)]
                if kind == "Deployment":
                    annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
                    uses_dapr = annotations.get("dapr.io/enabled") == "true"
                    problems += [where + p for p in validate_deployment(doc, dapr=uses_dapr)]
                    deployments.append(doc)
                elif kind == "Service":
                    services.append((name, doc))
    for name, doc in resiliencies:
        problems += [
            f"{name}: {p}" for p in validate_resiliency(doc, components=components, app_ids=app_ids)
        ]
    problems += _check_services_select(services, deployments)
    problems += _check_every_service(deployments, inputs)
    problems += validate_versions(parsed, inputs)
    return problems


def _check_services_select(
    services: Sequence[tuple[str, Mapping[str, Any]]], deployments: Sequence[Mapping[str, Any]]
) -> list[str]:
    problems: list[str] = []
    for name, svc in services:
        selector = svc["spec"].get("selector", {})
        matched = [
            d
            for d in deployments
            if all(
                d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items()
            )
        ]
        if len(matched) != 1:
            problems.append(f"{name}: selector matches {len(matched)} Deployments, not 1")
            continue
        names = {p.get("name") for c in _containers(matched[0]) for p in c.get("ports", [])}
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort")
            if isinstance(target, str) and target not in names:
                problems.append(f"{name}: targetPort {target} is not a container port")
    return problems


def _check_every_service(
    deployments: Sequence[Mapping[str, Any]], inputs: DeployInputs
) -> list[str]:
    by_app = {
        d["spec"]["template"]["metadata"].get("annotations", {}).get("dapr.io/app-id"): d
        for d in deployments
    }
    problems: list[str] = []
    for svc in inputs.services.services:
        d = by_app.get(svc.dapr_app_id)
        if d is None:
            problems.append(f"service {svc.name}: no Deployment with app id {svc.dapr_app_id}")
            continue
        ports = {p["name"]: p["containerPort"] for c in _containers(d) for p in c.get("ports", [])}
        if ports.get("grpc") != svc.grpc.port:
            problems.append(f"service {svc.name}: grpc port is not services.json's")
    return problems
