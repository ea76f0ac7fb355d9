"""The execution service: a paper venue with Virtufin's order lifecycle.

It consumes ``sc.<sid>.trading.order.submitted`` (``order.accepted`` with
``VIRTUFIN_EXECUTION_CONSUME=accepted``, when a risk filter worker is deployed), fills against
the latest bar or trade per symbol from ``act.exchange.>`` with the backtest's own venue and
portfolio (`services.execution.paper`), publishes the order lifecycle, fills, positions and
PnL on the scenario's lanes, persists orders, positions and the portfolio under
`virtufin.statekeys`, enforces ``SetRiskLimits`` and answers ``virtufin.Execution``.

Environment (besides the bootstrap's):

- ``VIRTUFIN_EXECUTION_FILL``: ``next-open`` (default: the next bar's open, or the next trade)
  or ``close`` (the last price, at once);
- ``VIRTUFIN_EXECUTION_CONSUME``: ``submitted`` (default) or ``accepted``;
- ``VIRTUFIN_EXECUTION_CASH``: starting cash per scenario (10000);
- ``VIRTUFIN_EXECUTION_COMMISSION``: fraction of traded value charged per fill (0);
- ``VIRTUFIN_EXECUTION_VENUE``: the venue named in fills and orders (``paper``);
- ``VIRTUFIN_EXECUTION_MARKET``: the market data to fill against (``act.exchange.>``);
- ``VIRTUFIN_EXECUTION_HOLD_SECONDS``: how long an order waits for the bar it was decided on
  (10).
"""

from __future__ import annotations

import gc
import os
from typing import Any

from services.bootstrap.context import ServiceContext
from services.execution.executor import PaperExecution, summary
from services.execution.paper import SOURCE, PaperSettings
from services.execution.servicer import ExecutionServicer
from virtufin import topics
from virtufin.bus.validation import LaneValidator
from virtufin.envelope import Envelope
from virtufin.errors import ConfigError
from virtufin.lanes import validate_pattern
from virtufin.proto import ensure_built
from virtufin.scenarios import ScenarioRegistry
from virtufin.topics import EventTypes

ensure_built()
from virtufin.proto.gen import execution_pb2, execution_pb2_grpc  # noqa: E402

__all__ = ["serve", "settings_from_env"]


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError("environment", name, f"not a number ({raw!r})") from None


def settings_from_env(env: dict[str, str] | None = None) -> PaperSettings:
    """`PaperSettings` from ``VIRTUFIN_EXECUTION_*``.

    Raises:
        ConfigError: naming the variable that is wrong.
    """
    env = dict(os.environ) if env is None else env
    fill = env.get("VIRTUFIN_EXECUTION_FILL", "").strip() or "next-open"
    if fill not in ("next-open", "close"):
        reason = f"next-open or close ({fill!r})"
        raise ConfigError("environment", "VIRTUFIN_EXECUTION_FILL", reason)
    consume = env.get("VIRTUFIN_EXECUTION_CONSUME", "").strip() or "submitted"
    if consume not in ("submitted", "accepted"):
        raise ConfigError(
            "environment", "VIRTUFIN_EXECUTION_CONSUME", f"submitted or accepted ({consume!r})"
        )
    try:
        return PaperSettings(
            fill="next-open" if fill == "next-open" else "close",
            consume="submitted" if consume == "submitted" else "accepted",
            venue=env.get("VIRTUFIN_EXECUTION_VENUE", "").strip() or "paper",
            cash=_float(env, "VIRTUFIN_EXECUTION_CASH", 10_000.0),
            commission_rate=_float(env, "VIRTUFIN_EXECUTION_COMMISSION", 0.0),
            hold_seconds=_float(env, "VIRTUFIN_EXECUTION_HOLD_SECONDS", 10.0),
        )
    except ValueError as exc:
        raise ConfigError("environment", "VIRTUFIN_EXECUTION_*", str(exc)) from None


async def serve(ctx: ServiceContext) -> None:
    """Run the paper venue until shutdown (the `services` serve convention)."""
    settings = settings_from_env()
    market = os.environ.get("VIRTUFIN_EXECUTION_MARKET", "").strip() or "act.exchange.>"
    validate_pattern(market)
    state = await ctx.open_state()
    registry = ScenarioRegistry(state)
    await registry.seed_live()
    bus = await ctx.open_bus(validator=LaneValidator(registry))
    execution = PaperExecution(
        bus=bus, store=state, registry=registry, settings=settings, market_pattern=market
    )
    lifecycle = topics.infra(ctx.name, "lifecycle")

    async def announce(event: str, data: dict[str, Any]) -> None:
        await bus.publish(
            lifecycle,
            Envelope.new(
                type=EventTypes.service(ctx.name, "lifecycle", event), source=SOURCE, data=data
            ),
        )

    async def stop() -> None:
        await execution.close()
        await announce("stopped", summary(execution))

    ctx.on_shutdown("paper venue", stop)
    ctx.add_servicer(
        execution_pb2_grpc.add_ExecutionServicer_to_server,
        ExecutionServicer(execution),
        execution_pb2.DESCRIPTOR.services_by_name["Execution"],
    )

    async def startup() -> None:
        await execution.start()
        ctx.log.info("paper venue ready", extra={"fill": settings.fill, **summary(execution)})
        await announce("online", {"fill": settings.fill, "consume": settings.consume})
        # Start-up objects (modules, the book) never die: keep them out of GC passes, which
        # would otherwise scan them on every full collection (fewer multi-ms pauses in fills).
        gc.collect()
        gc.freeze()

    await ctx.run(startup=startup)
