"""Pre-trade risk limits of the paper venue (``Execution.SetRiskLimits``).

Per scenario, 0 meaning "no limit":

- ``max_notional``: ``|qty × price|`` of one order, in quote currency. The price is the order's
  ``limit_price``, else the symbol's last price; an ``all_in`` order (no ``qty``) is valued at
  what it would buy: the book's equity.
- ``max_position``: ``|position after the fill|`` per symbol, in units; an ``exclusive`` order
  first closes the position, so only its own size counts.

A breached order is rejected before it reaches the venue: ``order.rejected`` with the reason
(``notional 10000.00 exceeds max_notional 5000.00``) and ``sc.<sid>.risk.limit.breach`` naming
the limit, the value and the threshold. Limits live in the state key ``sc.<sid>.risk.limits``
(beside the scenario's other keys, so a scenario delete removes them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from virtufin import statekeys

if TYPE_CHECKING:
    from services.execution.paper import PaperBook

__all__ = ["Breach", "RiskLimits", "limits_key", "risk_check"]


def limits_key(scenario_id: str) -> str:
    """``sc.<sid>.risk.limits`` (`virtufin.statekeys` has no builder for it yet)."""
    return f"{statekeys.scenario_prefix(scenario_id)}risk.limits"


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The limits of one scenario (0 = none)."""

    scenario_id: str
    max_notional: float = 0.0
    max_position: float = 0.0

    def __post_init__(self) -> None:
        for name in ("max_notional", "max_position"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number ≥ 0 (0 = no limit), not {value}")

    @property
    def active(self) -> bool:
        return bool(self.max_notional or self.max_position)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario_id": self.scenario_id,
            "max_notional": self.max_notional,
            "max_position": self.max_position,
        }

    @classmethod
    def from_json(cls, scenario_id: str, value: Mapping[str, Any]) -> RiskLimits:
        return cls(
            scenario_id,
            float(value.get("max_notional") or 0.0),
            float(value.get("max_position") or 0.0),
        )


@dataclass(frozen=True, slots=True)
class Breach:
    """Why an order was refused."""

    limit: str
    value: float
    threshold: float
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "value": self.value,
            "threshold": self.threshold,
            "reason": self.reason,
        }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def risk_check(limits: RiskLimits, order: Mapping[str, Any], book: PaperBook) -> Breach | None:
    """The first limit `order` breaches in `book`, or None."""
    if not limits.active:
        return None
    symbol = str(order.get("symbol", ""))
    qty = _number(order.get("qty"))
    price = _number(order.get("limit_price")) or book.market.price(symbol)
    if price is None or price <= 0:
        return Breach("price", 0.0, 0.0, f"no reference price for {symbol!r} to check risk limits")
    units = abs(qty) if qty is not None else math.floor(max(book.equity(), 0.0) / price)
    notional = units * price
    if limits.max_notional and notional > limits.max_notional:
        return Breach(
            "max_notional",
            notional,
            limits.max_notional,
            f"notional {notional:.2f} exceeds max_notional {limits.max_notional:.2f}",
        )
    if limits.max_position:
        held = 0.0 if order.get("exclusive") else book.portfolio.units.get(symbol, 0.0)
        sign = 1.0 if order.get("side") == "buy" else -1.0
        after = held + sign * units
        if abs(after) > limits.max_position:
            return Breach(
                "max_position",
                abs(after),
                limits.max_position,
                f"position {after:g} would exceed max_position {limits.max_position:g}",
            )
    return None
