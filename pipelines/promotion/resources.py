"""The WorkManager client: how a promotion is carried out.

| class                        | status                                                       |
|------------------------------|--------------------------------------------------------------|
| `InProcessWorkManagerClient` | works: records desired deployments in the state store        |
| `GatewayWorkManagerClient`   | not written yet: selecting it fails at run start, clearly    |
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Final

import dagster as dg
from pydantic import Field

from pipelines.promotion.workmanager import (
    Deployment,
    list_desired,
    record_desired_deployment,
)
from pipelines.resources import StateStoreResource

__all__ = ["GatewayWorkManagerClient", "InProcessWorkManagerClient", "WorkManagerClient"]

_GATEWAY_MISSING: Final = (
    "GatewayWorkManagerClient is not implemented yet: it is to call the WorkManager through "
    "the gateway (CreateWorker/StartWorker/StopWorker). Use VIRTUFIN_DEPLOYMENT=local (the "
    "in-process client) until it exists"
)


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
    """The WorkManager behind the gateway (production). To be completed: every call raises."""

    gateway_address: str = Field(description="host:port of the gateway (services.json)")
    api_key: str = Field(description="x-api-key for the gateway (EnvVar VIRTUFIN_API_KEY)")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        raise NotImplementedError(_GATEWAY_MISSING)

    def deploy(self, deployment: Deployment) -> Deployment:
        raise NotImplementedError(_GATEWAY_MISSING)

    def retire(self, deployment: Deployment, *, reason: str) -> Deployment:
        raise NotImplementedError(_GATEWAY_MISSING)

    def running(self, *, worker: str, step: str) -> list[Deployment]:
        raise NotImplementedError(_GATEWAY_MISSING)
