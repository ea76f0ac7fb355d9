"""Every error Virtufin raises on purpose.

Hierarchy::

    VirtufinError
    ├── ConfigError                 a config file or override is unusable (file, field, reason)
    ├── TopicError                  a topic string breaks the lane rules (topic)
    ├── EnvelopeError               a CloudEvent cannot be decoded or validated (field)
    ├── StateError                  the state store refused an operation (key)
    │   └── ConcurrencyError        an etag did not match: somebody else wrote first
    ├── ScenarioError               the scenario registry refused an operation (scenario_id)
    │   ├── ScenarioNotFoundError   no such scenario
    │   ├── ScenarioInactiveError   publishing to a scenario that is not active
    │   └── ScenarioImmutableError  LIVE, or a deleted scenario, cannot change
    ├── BusError                    the event bus could not publish or subscribe
    │   └── PublishRejectedError    the broker refused a publish (permissions, validation)
    ├── GatewayCallError            a call through the gateway made for a host failed (code)
    └── WorkerError                 a worker failed to load, start or process (worker_id)
        ├── WorkerLoadError         a worker's code, manifest or library is unusable
        │   └── WorkerParamsError   its parameters break the manifest's schema (problems)
        └── WorkerEventError        one event failed in the worker; the host dead-letters it

Every error carries the object it is about, so that callers can report it without parsing text.
"""

from __future__ import annotations

__all__ = [
    "BusError",
    "ConcurrencyError",
    "ConfigError",
    "EnvelopeError",
    "GatewayCallError",
    "PublishRejectedError",
    "ScenarioError",
    "ScenarioImmutableError",
    "ScenarioInactiveError",
    "ScenarioNotFoundError",
    "StateError",
    "TopicError",
    "VirtufinError",
    "WorkerError",
    "WorkerEventError",
    "WorkerLoadError",
    "WorkerParamsError",
]


class VirtufinError(Exception):
    """Base class of every error Virtufin raises on purpose."""


class ConfigError(VirtufinError):
    """A configuration file, variable or flag is unusable."""

    def __init__(self, file: str, field: str, reason: str) -> None:
        self.file = file
        self.field = field
        self.reason = reason
        where = f"{file}: {field}" if field else file
        super().__init__(f"{where}: {reason}")


class TopicError(VirtufinError):
    """A topic string breaks the lane rules."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"invalid topic {topic!r}: {reason}")


class EnvelopeError(VirtufinError):
    """A CloudEvent cannot be decoded or fails validation."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(
            f"invalid envelope: {field}: {reason}" if field else f"invalid envelope: {reason}"
        )


class StateError(VirtufinError):
    """The state store refused an operation."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"state key {key!r}: {reason}")


class ConcurrencyError(StateError):
    """An etag did not match the stored one: another writer won."""

    def __init__(self, key: str, expected_etag: str | None) -> None:
        self.expected_etag = expected_etag
        super().__init__(key, f"etag {expected_etag!r} does not match the stored value")


class ScenarioError(VirtufinError):
    """The scenario registry refused an operation."""

    def __init__(self, scenario_id: str, reason: str) -> None:
        self.scenario_id = scenario_id
        self.reason = reason
        super().__init__(f"scenario {scenario_id!r}: {reason}")


class ScenarioNotFoundError(ScenarioError):
    """No scenario with that id is registered."""

    def __init__(self, scenario_id: str) -> None:
        super().__init__(scenario_id, "is not registered")


class ScenarioInactiveError(ScenarioError):
    """Events may be published to `sc.<id>.*` only while the scenario is active."""

    def __init__(self, scenario_id: str, status: str) -> None:
        self.status = status
        super().__init__(scenario_id, f"is {status}; publishing needs status active")


class ScenarioImmutableError(ScenarioError):
    """LIVE is seeded once and never changes; a deleted scenario stays deleted."""


class BusError(VirtufinError):
    """The event bus could not publish or subscribe."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"bus error on {topic!r}: {reason}")


class PublishRejectedError(BusError):
    """The broker or the publisher's own validation refused a publish."""


class GatewayCallError(VirtufinError):
    """A call through the gateway made on a host's behalf (a native ``gateway_call``) failed.

    `code` is the gRPC status number (3 INVALID_ARGUMENT, 5 NOT_FOUND, 14 UNAVAILABLE, …) and
    `status` its name; `backend` is True when the backend answered with the failure, False when
    the gateway refused the call or could not be reached.
    """

    def __init__(
        self, call: str, code: int, status: str, message: str, *, backend: bool = False
    ) -> None:
        self.call = call
        self.code = code
        self.status = status
        self.message = message
        self.backend = backend
        super().__init__(f"{call}: {status}: {message}")


class WorkerError(VirtufinError):
    """A worker failed to load, start or process an event."""

    def __init__(self, worker_id: str, reason: str) -> None:
        self.worker_id = worker_id
        self.reason = reason
        super().__init__(f"worker {worker_id!r}: {reason}")


class WorkerLoadError(WorkerError):
    """A worker's code, manifest, parameters or native library is unusable."""


class WorkerParamsError(WorkerLoadError):
    """A worker's parameters break its schema or a cross-field rule; `problems` lists each."""

    def __init__(self, worker_id: str, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(worker_id, "invalid parameters: " + "; ".join(self.problems))


class WorkerEventError(WorkerError):
    """One event failed in the worker (raised, garbage, timeout, crash) after `attempts` tries."""

    def __init__(self, worker_id: str, reason: str, *, event: object, attempts: int = 1) -> None:
        self.event = event
        self.attempts = attempts
        super().__init__(worker_id, reason)
