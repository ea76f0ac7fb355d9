"""Kubernetes objects for the platform, as plain dictionaries (pure functions).

Per service in `services.json`: a Deployment (Dapr sidecar annotations, gRPC health probes on
the standard `grpc.health.v1.Health` service, resources by role, the image of
`versions.env`) and a Service. Shared: the namespace, a ConfigMap holding services.json
verbatim, single-node NATS (JetStream) and Redis for a self-contained cluster, and a Job
that creates the JetStream streams before Dapr subscribes.

Inside a pod a service binds its gRPC server to 0.0.0.0 and reaches the others through their
Kubernetes Services; both are set with the `VIRTUFIN_<SERVICE>_GRPC_HOST` overrides that
`ServicesConfig.with_overrides` reads, so the ConfigMap stays byte-identical to services.json.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from virtufin.config import ServiceConfig
from virtufin.deploy.images import (
    NATS_STREAMS_IMAGE,
    daprd_image,
    nats_image,
    redis_image,
    service_image,
)
from virtufin.deploy.inputs import DeployInputs

__all__ = [
    "CONFIG_DIR",
    "NAMESPACE",
    "NATS_URL",
    "REDIS_HOST",
    "ROLE_RESOURCES",
    "SERVICES_CONFIGMAP",
    "STATE_DIR",
    "STREAMS_CONFIGMAP",
    "STREAMS_DIR",
    "deployment",
    "grpc_host_variable",
    "kustomization",
    "labels",
    "namespace",
    "nats_deployment",
    "nats_service",
    "nats_streams_configmap",
    "nats_streams_job",
    "redis_deployment",
    "redis_service",
    "service",
    "services_configmap",
]

NAMESPACE: Final = "virtufin"
SERVICES_CONFIGMAP: Final = "virtufin-services"
STREAMS_CONFIGMAP: Final = "nats-streams"
CONFIG_DIR: Final = "/etc/virtufin"
STATE_DIR: Final = "/var/lib/virtufin"
STREAMS_DIR: Final = "/etc/virtufin/nats-streams"
NATS_URL: Final = f"nats://nats.{NAMESPACE}.svc:4222"
REDIS_HOST: Final = f"redis.{NAMESPACE}.svc:6379"
_USER: Final = 65532
_PART_OF: Final = "virtufin"
_MANAGED_BY: Final = "virtufin-deploy-render"

ROLE_RESOURCES: Final[Mapping[str, Mapping[str, Mapping[str, str]]]] = {
    "gateway": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
    "connector": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
    "production": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    "backtest": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "4Gi"}},
    "observer": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
}


def labels(name: str, component: str, inputs: DeployInputs) -> dict[str, str]:
    """The recommended `app.kubernetes.io/*` labels, sorted by key."""
    return {
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": _MANAGED_BY,
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": _PART_OF,
        "app.kubernetes.io/version": inputs.versions["VIRTUFIN_VERSION"],
    }


def _selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": _PART_OF}


def _metadata(name: str, component: str, inputs: DeployInputs) -> dict[str, Any]:
    return {"name": name, "namespace": NAMESPACE, "labels": labels(name, component, inputs)}


def grpc_host_variable(service_name: str) -> str:
    """The environment variable that overrides a service's gRPC host."""
    return "VIRTUFIN_" + service_name.upper().replace("-", "_") + "_GRPC_HOST"


def namespace(inputs: DeployInputs) -> dict[str, Any]:
    """The platform's namespace."""
    meta = {"name": NAMESPACE, "labels": labels(NAMESPACE, "namespace", inputs)}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def services_configmap(inputs: DeployInputs) -> dict[str, Any]:
    """services.json, verbatim, mounted at ``/etc/virtufin/services.json``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(SERVICES_CONFIGMAP, "config", inputs),
        "data": {"services.json": inputs.services_json},
    }


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": _USER,
        "runAsGroup": _USER,
        "fsGroup": _USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(svc: ServiceConfig, inputs: DeployInputs) -> list[dict[str, str]]:
    env = [
        {"name": "VIRTUFIN_DEPLOYMENT", "value": "production"},
        {"name": "VIRTUFIN_BUS", "value": "dapr"},
        {"name": "VIRTUFIN_STATE", "value": "dapr"},
        {"name": "VIRTUFIN_SERVICES", "value": f"{CONFIG_DIR}/services.json"},
        {"name": "VIRTUFIN_STATE_DIR", "value": STATE_DIR},
        {"name": "pubsubName", "value": svc.pubsub.pubsub_name},
        {"name": "stateStoreName", "value": svc.state.store_name},
    ]
    for other in inputs.services.services:
        host = "0.0.0.0" if other.name == svc.name else f"{other.name}.{NAMESPACE}.svc"
        env.append({"name": grpc_host_variable(other.name), "value": host})
    return env


def _grpc_probe(port: int, *, delay: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "grpc": {"port": port, "service": ""},
        "initialDelaySeconds": delay,
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _ports(svc: ServiceConfig) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = [
        {"name": "grpc", "containerPort": svc.grpc.port, "protocol": "TCP"}
    ]
    if svc.health_port is not None:
        ports.append({"name": "http", "containerPort": svc.health_port, "protocol": "TCP"})
    return ports


def deployment(svc: ServiceConfig, inputs: DeployInputs) -> dict[str, Any]:
    """The Deployment of one service, with its Dapr sidecar."""
    versions = inputs.versions
    pod_labels = labels(svc.name, svc.role, inputs)
    annotations = {
        "dapr.io/app-id": svc.dapr_app_id,
        "dapr.io/app-port": str(svc.grpc.port),
        "dapr.io/app-protocol": "grpc",
        "dapr.io/enabled": "true",
        "dapr.io/log-as-json": "true",
        "dapr.io/sidecar-image": daprd_image(versions),
        "virtufin.io/services-json-sha256": inputs.services_sha256,
    }
    container = {
        "name": svc.name,
        "image": service_image(svc.name, versions),
        "imagePullPolicy": "IfNotPresent",
        "command": ["virtufin", "serve", svc.name],
        "ports": _ports(svc),
        "env": _env(svc, inputs),
        "startupProbe": _grpc_probe(svc.grpc.port, delay=2, period=2, failures=60),
        "readinessProbe": _grpc_probe(svc.grpc.port, delay=0, period=10, failures=3),
        "livenessProbe": _grpc_probe(svc.grpc.port, delay=0, period=20, failures=3),
        "resources": {k: dict(v) for k, v in ROLE_RESOURCES[svc.role].items()},
        "securityContext": _security_context(),
        "volumeMounts": [
            {"name": "services", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(svc.name, svc.role, inputs),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": _selector(svc.name)},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": annotations},
                "spec": {
                    "securityContext": _pod_security_context(),
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [
                        {"name": "services", "configMap": {"name": SERVICES_CONFIGMAP}},
                        {"name": "state", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def service(svc: ServiceConfig, inputs: DeployInputs) -> dict[str, Any]:
    """The ClusterIP Service of one service (gRPC, plus the HTTP health port if any)."""
    ports: list[dict[str, Any]] = [
        {
            "name": "grpc",
            "port": svc.grpc.port,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        }
    ]
    if svc.health_port is not None:
        ports.append(
            {"name": "http", "port": svc.health_port, "targetPort": "http", "protocol": "TCP"}
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(svc.name, svc.role, inputs),
        "spec": {"type": "ClusterIP", "selector": _selector(svc.name), "ports": ports},
    }


def nats_streams_configmap(files: Mapping[str, str], inputs: DeployInputs) -> dict[str, Any]:
    """The stream definitions (file name → JSON text) the stream job reads."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(STREAMS_CONFIGMAP, "nats-streams", inputs),
        "data": {name: files[name] for name in sorted(files)},
    }


def nats_streams_job(files: Mapping[str, str], inputs: DeployInputs) -> dict[str, Any]:
    """A Job that creates or updates the JetStream streams (idempotent).

    Its name carries a digest of the stream definitions and the image, so a changed
    definition is a new Job (Job pod templates are immutable); finished Jobs expire.
    """
    image = service_image(NATS_STREAMS_IMAGE, inputs.versions)
    digest = hashlib.sha256(
        json.dumps({"files": dict(files), "image": image}, sort_keys=True).encode("utf-8")
    ).hexdigest()[:10]
    name = f"{STREAMS_CONFIGMAP}-{digest}"
    container = {
        "name": "nats-streams",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["virtufin-nats-streams", STREAMS_DIR],
        "env": [
            {"name": "NATS_URL", "value": NATS_URL},
            {"name": "VIRTUFIN_NATS_WAIT_SECONDS", "value": "120"},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": _security_context(),
        "volumeMounts": [{"name": "streams", "mountPath": STREAMS_DIR, "readOnly": True}],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(name, "nats-streams", inputs),
        "spec": {
            "backoffLimit": 10,
            "ttlSecondsAfterFinished": 86_400,
            "template": {
                "metadata": {
                    "labels": labels(STREAMS_CONFIGMAP, "nats-streams", inputs),
                    "annotations": {"dapr.io/enabled": "false"},
                },
                "spec": {
                    "restartPolicy": "OnFailure",
                    "securityContext": _pod_security_context(),
                    "containers": [container],
                    "volumes": [{"name": "streams", "configMap": {"name": STREAMS_CONFIGMAP}}],
                },
            },
        },
    }


def _broker_deployment(
    name: str,
    image: str,
    args: Sequence[str],
    ports: Sequence[tuple[str, int]],
    readiness: dict[str, Any],
    inputs: DeployInputs,
) -> dict[str, Any]:
    container = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": list(args),
        "ports": [{"name": p, "containerPort": n, "protocol": "TCP"} for p, n in ports],
        "readinessProbe": readiness,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": _security_context(),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, "broker", inputs),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": _selector(name)},
            "template": {
                "metadata": {
                    "labels": labels(name, "broker", inputs),
                    "annotations": {"dapr.io/enabled": "false"},
                },
                "spec": {
                    "securityContext": _pod_security_context(),
                    "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }


def _broker_service(
    name: str, ports: Sequence[tuple[str, int]], inputs: DeployInputs
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, "broker", inputs),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(name),
            "ports": [{"name": p, "port": n, "targetPort": p, "protocol": "TCP"} for p, n in ports],
        },
    }


_NATS_PORTS: Final = (("client", 4222), ("monitor", 8222))
_REDIS_PORTS: Final = (("redis", 6379),)


def nats_deployment(inputs: DeployInputs) -> dict[str, Any]:
    """Single-node NATS with JetStream on an emptyDir (a development cluster's broker)."""
    readiness = {
        "httpGet": {"path": "/healthz?js-enabled-only=true", "port": "monitor"},
        "periodSeconds": 5,
    }
    args = ["--jetstream", "--store_dir", "/data", "--http_port", "8222"]
    return _broker_deployment(
        "nats", nats_image(inputs.versions), args, _NATS_PORTS, readiness, inputs
    )


def nats_service(inputs: DeployInputs) -> dict[str, Any]:
    """The NATS client and monitoring ports."""
    return _broker_service("nats", _NATS_PORTS, inputs)


def redis_deployment(inputs: DeployInputs) -> dict[str, Any]:
    """Single-node Redis without persistence (the Dapr state store of a development cluster)."""
    readiness = {"tcpSocket": {"port": "redis"}, "periodSeconds": 5}
    args = ["--save", "", "--appendonly", "no", "--dir", "/data"]
    return _broker_deployment(
        "redis", redis_image(inputs.versions), args, _REDIS_PORTS, readiness, inputs
    )


def redis_service(inputs: DeployInputs) -> dict[str, Any]:
    """The Redis port."""
    return _broker_service("redis", _REDIS_PORTS, inputs)


def kustomization(resources: Sequence[str]) -> dict[str, Any]:
    """A kustomization listing `resources` (paths relative to it) in the given order."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": list(resources),
    }
