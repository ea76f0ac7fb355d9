"""Dapr resources for the platform, as plain dictionaries (pure functions).

Components are named after what services.json references (`pubsub.pubsubName`,
`state.storeName`) and scoped to the app ids that use them, so a new service picks them up
without an edit here:

- pub/sub: ``pubsub.jetstream`` (default) or ``pubsub.redis`` (Redis Streams, alternative)
- state:   ``state.redis`` (default) or ``state.postgresql`` version ``v2`` (alternative)

An alternative has the same component name as the default it replaces, so switching is
swapping one file. `Endpoints` says where the brokers are: `LOCAL` for `dapr run -f` on a
workstation (the servers of `virtufin-brokers` / CI), `CLUSTER` for the Kubernetes render.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from virtufin.deploy.inputs import DeployInputs
from virtufin.deploy.k8s import NAMESPACE, NATS_URL, REDIS_HOST

__all__ = [
    "CLUSTER",
    "COMPONENT_API_VERSION",
    "LOCAL",
    "RESILIENCY_NAME",
    "RUNTIME_LABEL",
    "Endpoints",
    "SecretRef",
    "jetstream_pubsub",
    "multi_app_run",
    "postgresql_state",
    "pubsub_names",
    "redis_pubsub",
    "redis_state",
    "resiliency",
    "store_names",
]

COMPONENT_API_VERSION: Final = "dapr.io/v1alpha1"
RESILIENCY_NAME: Final = "virtufin-resiliency"
RUNTIME_LABEL: Final = "virtufin.io/dapr-runtime-version"


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A value read from a secret store: `name` is the secret, `key` the entry in it."""

    name: str
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoints:
    """Broker addresses for one environment; `namespace` is None outside Kubernetes."""

    nats_url: str
    redis_host: str
    postgres: str | SecretRef
    namespace: str | None
    secret_store: str | None = None


LOCAL: Final = Endpoints(
    nats_url="nats://127.0.0.1:4222",
    redis_host="127.0.0.1:6379",
    postgres="host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable",
    namespace=None,
)
CLUSTER: Final = Endpoints(
    nats_url=NATS_URL,
    redis_host=REDIS_HOST,
    postgres=SecretRef("virtufin-postgres", "connectionString"),
    namespace=NAMESPACE,
    secret_store="kubernetes",
)


def pubsub_names(inputs: DeployInputs) -> tuple[str, ...]:
    """Distinct pub/sub component names referenced by services.json, in first-use order."""
    return tuple(dict.fromkeys(s.pubsub.pubsub_name for s in inputs.services.services))


def store_names(inputs: DeployInputs) -> tuple[str, ...]:
    """Distinct state store names referenced by services.json, in first-use order."""
    return tuple(dict.fromkeys(s.state.store_name for s in inputs.services.services))


def _scopes_for_pubsub(name: str, inputs: DeployInputs) -> list[str]:
    return sorted(s.dapr_app_id for s in inputs.services.services if s.pubsub.pubsub_name == name)


def _scopes_for_store(name: str, inputs: DeployInputs) -> list[str]:
    return sorted(s.dapr_app_id for s in inputs.services.services if s.state.store_name == name)


def _item(name: str, value: str | SecretRef) -> dict[str, Any]:
    if isinstance(value, SecretRef):
        return {"name": name, "secretKeyRef": {"name": value.name, "key": value.key}}
    return {"name": name, "value": value}


def _metadata(name: str, inputs: DeployInputs, endpoints: Endpoints) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if endpoints.namespace is not None:
        meta["namespace"] = endpoints.namespace
    meta["labels"] = {
        "app.kubernetes.io/managed-by": "virtufin-deploy-render",
        "app.kubernetes.io/part-of": "virtufin",
        "app.kubernetes.io/version": inputs.versions["VIRTUFIN_VERSION"],
        RUNTIME_LABEL: inputs.versions["DAPR_RUNTIME_VERSION"],
    }
    return meta


def _component(
    name: str,
    type_: str,
    version: str,
    items: Sequence[dict[str, Any]],
    scopes: list[str],
    inputs: DeployInputs,
    endpoints: Endpoints,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": COMPONENT_API_VERSION,
        "kind": "Component",
        "metadata": _metadata(name, inputs, endpoints),
        "spec": {"type": type_, "version": version, "metadata": list(items)},
    }
    if any("secretKeyRef" in item for item in items) and endpoints.secret_store is not None:
        doc["auth"] = {"secretStore": endpoints.secret_store}
    doc["scopes"] = scopes
    return doc


def jetstream_pubsub(name: str, inputs: DeployInputs, endpoints: Endpoints) -> dict[str, Any]:
    """`pubsub.jetstream` v1: durable, explicitly acknowledged, one queue group per app.

    The streams must exist first (see `virtufin.deploy.streams`); no `streamName` is set,
    so each subscription binds to the stream that holds its subject.
    """
    items = [
        _item("natsURL", endpoints.nats_url),
        _item("name", "{appID}"),
        _item("durableName", "{appID}"),
        _item("queueGroupName", "{appID}"),
        _item("deliverPolicy", "all"),
        _item("ackPolicy", "explicit"),
        _item("ackWait", "30s"),
        _item("maxDeliver", "10"),
        _item("backOff", "1s, 5s, 30s"),
        _item("maxAckPending", "1000"),
    ]
    scopes = _scopes_for_pubsub(name, inputs)
    return _component(name, "pubsub.jetstream", "v1", items, scopes, inputs, endpoints)


def redis_pubsub(name: str, inputs: DeployInputs, endpoints: Endpoints) -> dict[str, Any]:
    """`pubsub.redis` v1 (Redis Streams): the alternative to JetStream."""
    items = [
        _item("redisHost", endpoints.redis_host),
        _item("redisPassword", ""),
        _item("consumerID", "{appID}"),
        _item("processingTimeout", "60s"),
        _item("redeliverInterval", "15s"),
        _item("maxLenApprox", "1000000"),
    ]
    scopes = _scopes_for_pubsub(name, inputs)
    return _component(name, "pubsub.redis", "v1", items, scopes, inputs, endpoints)


def redis_state(name: str, inputs: DeployInputs, endpoints: Endpoints) -> dict[str, Any]:
    """`state.redis` v1, the default state store (etags for optimistic concurrency)."""
    items = [
        _item("redisHost", endpoints.redis_host),
        _item("redisPassword", ""),
        _item("enableTLS", "false"),
        _item("actorStateStore", "false"),
    ]
    scopes = _scopes_for_store(name, inputs)
    return _component(name, "state.redis", "v1", items, scopes, inputs, endpoints)


def postgresql_state(name: str, inputs: DeployInputs, endpoints: Endpoints) -> dict[str, Any]:
    """`state.postgresql` v2: the alternative state store (one table per app id)."""
    items = [
        _item("connectionString", endpoints.postgres),
        _item("tablePrefix", "virtufin_"),
        _item("metadataTableName", "virtufin_dapr_metadata"),
        _item("timeout", "20s"),
        _item("cleanupInterval", "1h"),
        _item("actorStateStore", "false"),
    ]
    scopes = _scopes_for_store(name, inputs)
    return _component(name, "state.postgresql", "v2", items, scopes, inputs, endpoints)


def resiliency(inputs: DeployInputs, endpoints: Endpoints) -> dict[str, Any]:
    """Timeouts, retries and circuit breakers for invocation, pub/sub and state."""
    policies = {
        "timeouts": {"invoke": "10s", "state": "5s", "publish": "5s"},
        "retries": {
            "invokeRetry": {"policy": "exponential", "maxInterval": "10s", "maxRetries": 5},
            "publishRetry": {"policy": "exponential", "maxInterval": "15s", "maxRetries": 10},
            "deliverRetry": {"policy": "constant", "duration": "5s", "maxRetries": 10},
            "stateRetry": {"policy": "constant", "duration": "200ms", "maxRetries": 5},
        },
        "circuitBreakers": {
            "appBreaker": {
                "maxRequests": 1,
                "interval": "10s",
                "timeout": "30s",
                "trip": "consecutiveFailures > 5",
            },
            "brokerBreaker": {
                "maxRequests": 1,
                "interval": "10s",
                "timeout": "60s",
                "trip": "consecutiveFailures > 10",
            },
        },
    }
    apps = {
        app_id: {"timeout": "invoke", "retry": "invokeRetry", "circuitBreaker": "appBreaker"}
        for app_id in sorted(inputs.app_ids)
    }
    components: dict[str, Any] = {}
    for name in pubsub_names(inputs):
        components[name] = {
            "outbound": {
                "timeout": "publish",
                "retry": "publishRetry",
                "circuitBreaker": "brokerBreaker",
            },
            "inbound": {"retry": "deliverRetry"},
        }
    for name in store_names(inputs):
        components[name] = {
            "outbound": {
                "timeout": "state",
                "retry": "stateRetry",
                "circuitBreaker": "brokerBreaker",
            }
        }
    return {
        "apiVersion": COMPONENT_API_VERSION,
        "kind": "Resiliency",
        "metadata": _metadata(RESILIENCY_NAME, inputs, endpoints),
        "spec": {"policies": policies, "targets": {"apps": apps, "components": components}},
        "scopes": sorted(inputs.app_ids),
    }


def multi_app_run(inputs: DeployInputs, *, app_dir: str, resources_dir: str) -> dict[str, Any]:
    """The `dapr run -f` file: every service with its sidecar, on the local brokers.

    Args:
        app_dir: the project root, relative to the run file.
        resources_dir: the components folder, relative to the run file.
    """
    common_env: Mapping[str, str] = {
        "VIRTUFIN_BUS": "dapr",
        "VIRTUFIN_DEPLOYMENT": "local",
        "VIRTUFIN_STATE": "dapr",
    }
    apps = [
        {
            "appID": svc.dapr_app_id,
            "appDirPath": app_dir,
            "appPort": svc.grpc.port,
            "appProtocol": "grpc",
            "command": ["virtufin", "serve", svc.name],
            "env": {
                "pubsubName": svc.pubsub.pubsub_name,
                "stateStoreName": svc.state.store_name,
            },
        }
        for svc in inputs.services.services
    ]
    return {
        "version": 1,
        "common": {"resourcesPath": resources_dir, "env": dict(common_env)},
        "apps": apps,
    }
