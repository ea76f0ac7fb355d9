"""Several services in this one process: `virtufin up --bus memory` and the main job's live
stage both run them this way.

With ``share_memory_bus`` (the embedded default) every service gets the same `MemoryBus` and
the same state store; otherwise each opens its own adapters from its settings (e.g. NATS), as
a separate process would.

Example:
    >>> async with services_in_process(configs) as running:      # doctest: +SKIP
    ...     await running.wait_healthy(deadline)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from virtufin.bus.memory import MemoryBus
from virtufin.errors import ConfigError, VirtufinError
from virtufin.state.port import StateStore

__all__ = ["InProcessServices", "services_in_process"]

log = logging.getLogger(__name__)


@dataclass
class InProcessServices:
    """The running services: their tasks, addresses, and the shared adapters if any."""

    tasks: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    bus: MemoryBus | None = None
    store: StateStore | None = None
    contexts: list[Any] = field(default_factory=list)

    def dead(self) -> str | None:
        """Which service stopped (and why), if one did."""
        for name, task in self.tasks.items():
            if task.done():
                exc = None if task.cancelled() else task.exception()
                return f"{name} stopped" + (f": {type(exc).__name__}: {exc}" if exc else "")
        return None

    async def wait_healthy(self, deadline: float) -> str | None:
        """Poll health until every service is SERVING; the problem otherwise."""
        from virtufin.cli.up import health_of

        waiting = dict(self.addresses)
        while waiting:
            for name, address in list(waiting.items()):
                health, _ = await health_of(address, timeout_s=1.0)
                if health == "SERVING":
                    del waiting[name]
            problem = self.dead()
            if problem is not None:
                return problem
            if waiting and time.monotonic() > deadline:
                return f"not SERVING within the start timeout: {', '.join(waiting)}"
            if waiting:
                await asyncio.sleep(0.1)
        return None


@contextlib.asynccontextmanager
async def services_in_process(
    configs: Sequence[Any], *, share_memory_bus: bool = True, grace_s: float = 10.0
) -> AsyncIterator[InProcessServices]:
    """Start each `ServeConfig` of `configs` as a task of this loop; stop them all on exit.

    Raises:
        ConfigError: a service cannot bind its port or otherwise cannot start.
    """
    from services.bootstrap import create_context
    from services.bootstrap.traced_bus import TracedBus
    from virtufin.bus.validation import LaneValidator
    from virtufin.cli.serve import resolve_entry
    from virtufin.scenarios import ScenarioRegistry
    from virtufin.state.factory import create_state

    running = InProcessServices()
    if share_memory_bus:
        running.store = await create_state(configs[0].settings)
        registry = ScenarioRegistry(running.store)
        await registry.seed_live()
        running.bus = MemoryBus(validator=LaneValidator(registry))
    try:
        for config in configs:
            try:
                ctx = await create_context(config, install_signal_handlers=False)
            except VirtufinError as exc:
                raise ConfigError(
                    "services.json",
                    config.service.name,
                    f"cannot start: {type(exc).__name__}: {exc}",
                ) from exc
            if share_memory_bus:

                async def shared_state(store: Any = running.store) -> Any:
                    return store

                async def shared_bus(*, validator: Any = None, bus: Any = running.bus) -> Any:
                    return TracedBus(bus)  # closed once, here, after every service stopped

                setattr(ctx, "open_state", shared_state)  # noqa: B010
                setattr(ctx, "open_bus", shared_bus)  # noqa: B010
            running.contexts.append(ctx)
            running.addresses[config.service.name] = f"127.0.0.1:{ctx.port}"
            entry = resolve_entry(config.service.module)
            running.tasks[config.service.name] = asyncio.ensure_future(entry(ctx))
        yield running
    finally:
        for ctx in running.contexts:
            ctx.request_stop()
        if running.tasks:
            done, pending = await asyncio.wait(running.tasks.values(), timeout=grace_s + 15)
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("service task failed", exc_info=task.exception())
        if running.bus is not None:
            await running.bus.close()
        if running.store is not None:
            await running.store.close()
