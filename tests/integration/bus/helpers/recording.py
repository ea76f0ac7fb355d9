"""Small test helpers: a recording handler and a polling wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from virtufin.bus.port import Delivery
from virtufin.envelope import Envelope


async def eventually(check: Callable[[], bool], what: str, *, within: float = 10.0) -> None:
    """Poll `check` until it holds; fail naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"expected {what} within {within}s")
        await asyncio.sleep(0.01)


@dataclass
class Seen:
    envelope: Envelope
    delivery: Delivery
    at: float


@dataclass
class Recorder:
    """A handler that records every call; `fail` decides whether a call raises."""

    fail: Callable[[Envelope, Delivery], bool] | None = None
    calls: list[Seen] = field(default_factory=list)

    async def __call__(self, envelope: Envelope, delivery: Delivery) -> None:
        self.calls.append(Seen(envelope, delivery, time.monotonic()))
        if self.fail is not None and self.fail(envelope, delivery):
            raise RuntimeError(f"cannot handle {envelope.id}")

    @property
    def ids(self) -> list[str]:
        return [seen.envelope.id for seen in self.calls]


def event(n: int = 0, **attrs: object) -> Envelope:
    return Envelope.new(
        type="com.virtufin.test.happened", source="urn:com.virtufin.test", data={"n": n}, **attrs
    )
