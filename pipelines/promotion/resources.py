"""The WorkManager client: how a promotion is carried out.

| class                        | status                                                       |
|------------------------------|--------------------------------------------------------------|
| `InProcessWorkManagerClient` | works: records desired deployments in the state store        |
| `GatewayWorkManagerClient`   | works: creates, starts and stops workers through the gateway |
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any, Final

import dagster as dg
import grpc
from pydantic import Field

from pipelines.promotion.workmanager import (
    Deployment,
    list_desired,
    record_desired_deployment,
)
from pipelines.resources import StateStoreResource

__all__ = ["GatewayWorkManagerClient", "InProcessWorkManagerClient", "WorkManagerClient"]


class WorkManagerClient(dg.ConfigurableResource, ABC):  # type: ignore[type-arg]
    """Starts and retires worker versions on lanes.

    | method   | required | notes                                                  |
    |----------|----------|--------------------------------------------------------|
    | deploy   | yes      | the version should run on the deployment's lanes       |
    | retire   | yes      | the deployment should stop                             |
    | running  | yes      | deployments of a worker on a step that should be up    |
    """

    @abstractmethod
    def deploy(self, deployment: Deployment) -> Deployment:
        raise NotImplementedError("WorkManagerClient.deploy")

    @abstractmethod
    def retire(self, deployment: Deployment, *, reason: str) -> Deployment:
        raise NotImplementedError("WorkManagerClient.retire")

    @abstractmethod
    def running(self, *, worker: str, step: str) -> list[Deployment]:
        raise NotImplementedError("WorkManagerClient.running")


class InProcessWorkManagerClient(WorkManagerClient):
    """Records desired deployments (``workmanager.desired.<id>``) in the Virtufin state store."""

    state: StateStoreResource = Field(description="where desired deployments are recorded")

    def deploy(self, deployment: Deployment) -> Deployment:
        wanted = deployment.model_copy(update={"desired": "running"})
        return self.state.run(lambda store: record_desired_deployment(store, wanted))

    def retire(self, deployment: Deployment, *, reason: str) -> Deployment:
        stopped = deployment.model_copy(update={"desired": "stopped", "reason": reason})
        return self.state.run(lambda store: record_desired_deployment(store, stopped))

    def running(self, *, worker: str, step: str) -> list[Deployment]:
        found = self.state.run(list_desired)
        return [
            d for d in found if d.worker == worker and d.step == step and d.desired == "running"
        ]


class GatewayWorkManagerClient(WorkManagerClient):
    """The WorkManager behind the gateway (production), through the Python client.

    A deployment becomes a worker whose id is the deployment id (lower-cased), created from
    the bundled worker's manifest (``workers/<worker>/manifest.json``, a path the WorkManager
    resolves inside its code roots), subscribed to the deployment's market lane, on its
    scenario, with the whole deployment recorded in the worker's tags so `running` can read it
    back. Retiring stops the worker and keeps its record and history.
    """

    gateway_address: str = Field(description="host:port of the gateway (services.json)")
    api_key: str = Field(description="x-api-key for the gateway (EnvVar VIRTUFIN_API_KEY)")

    def _client(self) -> Any:
        from virtufin.client import Client

        return Client(self.gateway_address, api_key=self.api_key or None)

    def deploy(self, deployment: Deployment) -> Deployment:
        from virtufin.client import ClientError

        wanted = deployment.model_copy(update={"desired": "running"})
        worker_id = _worker_id(wanted)
        with self._client() as client:
            workmanager = client.gateway.workmanager
            try:
                workmanager.CreateWorker(
                    {
                        "id": worker_id,
                        "code_source": {"url": f"workers/{wanted.worker}/manifest.json"},
                        "topic": _market_topic(wanted),
                        "group": worker_id,
                        "parameters_json": json.dumps(wanted.params),
                        "scenario_id": wanted.scenario,
                        "version": wanted.version,
                        "tags": _tags(wanted),
                        "start": True,
                    }
                )
            except ClientError as exc:
                if exc.code is not grpc.StatusCode.ALREADY_EXISTS:
                    raise
                workmanager.SetTags({"id": worker_id, "tags": _tags(wanted)})
                workmanager.StartWorker({"id": worker_id})
        return wanted

    def retire(self, deployment: Deployment, *, reason: str) -> Deployment:
        from virtufin.client import ClientError

        stopped = deployment.model_copy(update={"desired": "stopped", "reason": reason})
        worker_id = _worker_id(stopped)
        with self._client() as client:
            workmanager = client.gateway.workmanager
            try:
                workmanager.StopWorker({"id": worker_id})
                workmanager.SetTags({"id": worker_id, "tags": _tags(stopped)})
            except ClientError as exc:
                if exc.code is not grpc.StatusCode.NOT_FOUND:
                    raise
        return stopped

    def running(self, *, worker: str, step: str) -> list[Deployment]:
        with self._client() as client:
            listed = client.gateway.workmanager.ListWorkers()
        found = []
        for info in listed.get("workers", []):
            raw = info.get("tags", {}).get(_DEPLOYMENT_TAG)
            if raw is None or info.get("status") != "WORKER_STATUS_RUNNING":
                continue
            deployment = Deployment.model_validate_json(raw)
            if deployment.worker == worker and deployment.step == step:
                found.append(deployment)
        return found


_DEPLOYMENT_TAG: Final = "virtufin.deployment"


def _worker_id(deployment: Deployment) -> str:
    return deployment.id.lower()


def _market_topic(deployment: Deployment) -> str:
    """Every OHLCV candle of the deployment's market lane (act, or hyp.<selector>)."""
    lane = deployment.lanes.get("market", "act")
    return f"{'act' if lane == 'act' else 'hyp.*'}.exchange.*.ohlcv.candle.>"


def _tags(deployment: Deployment) -> dict[str, str]:
    text = deployment.model_dump_json()
    if len(text) > 1024:  # Virtufin's tag value limit
        raise ValueError(f"deployment {deployment.id} is too large to record in a worker tag")
    return {
        _DEPLOYMENT_TAG: text,
        "step": deployment.step,
        "candidate": deployment.candidate,
        "desired": deployment.desired,
    }
