"""Retries and circuit breakers toward backends, with Virtufin's published defaults.

Virtufin's API retries a failed backend call ``DAPR_RETRY_ATTEMPTS`` = 3 times in all, with
``DAPR_RETRY_BASE_DELAY_MS`` = 200 doubling per attempt, and opens a circuit after 5
consecutive failures for 30 s. Only UNAVAILABLE is retried (the call did not reach a handler);
UNAVAILABLE and DEADLINE_EXCEEDED count as failures for the breaker; any other answer,
error or not, proves the backend alive and closes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import grpc

__all__ = [
    "BREAKER_FAILURES",
    "RETRYABLE",
    "BreakerState",
    "CircuitBreaker",
    "ResilienceConfig",
]

RETRYABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE})
BREAKER_FAILURES: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResilienceConfig:
    """Retry and breaker settings.

    Environment: ``VIRTUFIN_RETRY_ATTEMPTS`` (or Virtufin's ``DAPR_RETRY_ATTEMPTS``),
    ``VIRTUFIN_RETRY_BASE_DELAY_MS`` (``DAPR_RETRY_BASE_DELAY_MS``),
    ``VIRTUFIN_CIRCUIT_THRESHOLD``, ``VIRTUFIN_CIRCUIT_OPEN_SECONDS``.

    Example:
        >>> ResilienceConfig().delay_seconds(2)
        0.4
    """

    attempts: int = 3
    base_delay_ms: float = 200.0
    max_delay_ms: float = 5000.0
    breaker_threshold: int = 5
    breaker_open_seconds: float = 30.0
    call_timeout_seconds: float = 30.0

    def delay_seconds(self, attempt: int) -> float:
        """Pause after failed attempt number `attempt` (1-based)."""
        delay_ms = min(self.base_delay_ms * 2.0 ** (attempt - 1), self.max_delay_ms)
        return float(delay_ms) / 1000.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ResilienceConfig:
        env = os.environ if env is None else env

        def pick(*names: str) -> str | None:
            return next((env[n] for n in names if env.get(n)), None)

        values: dict[str, float] = {}
        for field, names in (
            ("attempts", ("VIRTUFIN_RETRY_ATTEMPTS", "DAPR_RETRY_ATTEMPTS")),
            ("base_delay_ms", ("VIRTUFIN_RETRY_BASE_DELAY_MS", "DAPR_RETRY_BASE_DELAY_MS")),
            ("breaker_threshold", ("VIRTUFIN_CIRCUIT_THRESHOLD",)),
            ("breaker_open_seconds", ("VIRTUFIN_CIRCUIT_OPEN_SECONDS",)),
        ):
            raw = pick(*names)
            if raw is not None:
                values[field] = float(raw)
        return cls(
            attempts=max(1, int(values.get("attempts", 3))),
            base_delay_ms=values.get("base_delay_ms", 200.0),
            breaker_threshold=max(1, int(values.get("breaker_threshold", 5))),
            breaker_open_seconds=values.get("breaker_open_seconds", 30.0),
        )


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Open after `threshold` consecutive failures; after `open_seconds` let one trial through.

    Example:
        >>> b = CircuitBreaker(threshold=1, open_seconds=30)
        >>> b.failure(); b.allow()
        False
    """

    def __init__(
        self,
        *,
        threshold: int = 5,
        open_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.open_seconds:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """Whether a call may go through now (in half-open state: one trial at a time)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial = False

    def failure(self) -> None:
        self._failures += 1
        self._trial = False
        if self._opened_at is not None or self._failures >= self.threshold:
            self._opened_at = self._clock()

    def reset(self) -> None:
        """Close the breaker (the backend was seen SERVING again)."""
        self.success()
