"""Backtest scenarios: what one scenario partition means, and where its definition lives.

A backtest scenario is a strategy worker + version + parameters + selector + symbols + date
range (+ costs and the promotion gates' thresholds). Its id is derived from those fields, so the
same definition always gets the same id (``BT_<WORKER>_<8 hex>``), and is at once:

- a partition of the ``backtest_scenarios`` dynamic partitions (Dagster instance);
- a scenario in the `ScenarioRegistry` (hyp/hyp/hyp on the selector, strategy ``worker@version``);
- a JSON document at ``sc.<id>.backtest.spec`` in the state store (deleted with the scenario).

The promotion ladder reuses the id's digest for its steps: ``PP_…`` (paper) and ``SH_…``
(shadow).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from virtufin import statekeys
from virtufin.errors import ScenarioNotFoundError, VirtufinError
from virtufin.lanes import is_valid_id
from virtufin.marketdata import DEFAULT_SELECTOR
from virtufin.marketdata.calendar import CALENDAR_NAMES
from virtufin.scenarios import Scenario, ScenarioRegistry
from virtufin.state.port import StateStore

__all__ = [
    "STEP_PREFIXES",
    "BacktestSpec",
    "GateThresholds",
    "PromotionGates",
    "load_spec",
    "manifest_version",
    "register_specs",
    "spec_key",
    "step_scenario_id",
]

_TAG_RE: Final = re.compile(r"[^A-Z0-9]+")
STEP_PREFIXES: Final = {"backtest": "BT", "paper": "PP", "shadow": "SH"}


def manifest_version(worker: str) -> str:
    """The version in a worker's manifest, or ``unversioned`` when it cannot be resolved."""
    from virtufin.backtest.hosting import resolve_strategy

    try:
        return resolve_strategy(worker).version
    except VirtufinError:
        return "unversioned"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GateThresholds(_Model):
    """Thresholds of one promotion step's blocking checks.

    Usage: ``GateThresholds(min_sharpe=0.5, max_drawdown_pct=20, min_trades=5)``.
    """

    min_sharpe: float = Field(default=0.0, description="Sharpe ratio must be at least this")
    max_drawdown_pct: float = Field(
        default=35.0, ge=0, description="max drawdown, a positive percentage, at most this"
    )
    min_trades: int = Field(default=3, ge=0, description="closed trades at least this")
    max_sharpe_regression: float = Field(
        default=0.0,
        ge=0,
        description="Sharpe may trail the LIVE version's on the same data by at most this",
    )


class PromotionGates(_Model):
    """Thresholds per step: leaving backtest, leaving paper, leaving shadow (to LIVE)."""

    backtest: GateThresholds = GateThresholds()
    paper: GateThresholds = GateThresholds(min_trades=1)
    shadow: GateThresholds = GateThresholds(min_trades=1)

    def for_step(self, step: str) -> GateThresholds:
        found: GateThresholds = getattr(self, step)
        return found


class BacktestSpec(_Model):
    """One backtest scenario. Usage: ``BacktestSpec(symbols=("AAA",), start=..., end=...)``."""

    worker: str = Field(default="sma_cross", description="bundled worker name or module:Class")
    version: str = Field(
        default="", description="the worker version evaluated (default: its manifest's)"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="worker parameters")
    selector: str = Field(default=DEFAULT_SELECTOR, description="data universe replayed")
    symbols: tuple[str, ...] = Field(min_length=1, description="symbols replayed")
    start: date = Field(description="first partition date replayed")
    end: date = Field(description="last partition date replayed")
    calendar: str = Field(default="xnys", description="session calendar for gap checks")
    cash: float = Field(default=10_000.0, gt=0, description="starting cash")
    commission_rate: float = Field(default=0.0, ge=0, lt=0.1, description="per fill, fraction")
    gates: PromotionGates = Field(default_factory=PromotionGates, description="gate thresholds")
    paper_sessions: int = Field(
        default=126, ge=2, description="sessions replayed as paper evidence (embedded mode)"
    )
    shadow_sessions: int = Field(
        default=84, ge=2, description="sessions replayed as shadow evidence (embedded mode)"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_version(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("version"):
            return {**data, "version": manifest_version(str(data.get("worker", "sma_cross")))}
        return data

    @model_validator(mode="after")
    def _rules(self) -> BacktestSpec:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) must not be before start ({self.start})")
        if not is_valid_id(self.selector):
            raise ValueError("selector must match ^[A-Z0-9_]{1,32}$")
        if self.calendar not in CALENDAR_NAMES:
            raise ValueError(f"calendar must be one of {CALENDAR_NAMES}")
        return self

    @property
    def strategy_id(self) -> str:
        """``<worker>@<version>``: the registry's strategy lane id."""
        return f"{self.worker}@{self.version}"

    def identity(self) -> dict[str, Any]:
        """The fields that make the scenario id (not costs' display, not the gates)."""
        return {
            "worker": self.worker,
            "version": self.version,
            "params": self.params,
            "selector": self.selector,
            "symbols": list(self.symbols),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "cash": self.cash,
            "commission_rate": self.commission_rate,
        }

    def digest(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:8].upper()

    @property
    def scenario_id(self) -> str:
        """``BT_<WORKER>_<DIGEST>`` (at most 26 characters)."""
        tag = _TAG_RE.sub("_", self.worker.upper()).strip("_")[:14] or "W"
        return f"BT_{tag}_{self.digest()}"


def step_scenario_id(scenario_id: str, step: str) -> str:
    """The scenario id of a ladder step: ``BT_X_1A`` → ``PP_X_1A`` (paper), ``SH_X_1A``."""
    return f"{STEP_PREFIXES[step]}_{scenario_id.split('_', 1)[1]}"


def spec_key(scenario_id: str) -> str:
    """``sc.<id>.backtest.spec``: under the scenario's prefix, so deleting it purges the spec."""
    return f"{statekeys.scenario_prefix(scenario_id)}backtest.spec"


async def register_specs(store: StateStore, specs: list[BacktestSpec]) -> list[str]:
    """Register each spec's scenario (idempotent) and store the spec; return the ids in order.

    Raises:
        ScenarioImmutableError: a spec's id belongs to a deleted scenario.
    """
    registry = ScenarioRegistry(store)
    await registry.seed_live()
    ids = []
    for spec in specs:
        sid = spec.scenario_id
        scenario = Scenario.backtest(
            sid,
            selector=spec.selector,
            strategy_id=spec.strategy_id,
            name=f"Backtest {spec.strategy_id} {json.dumps(spec.params, sort_keys=True)}",
        )
        await registry.register(scenario, replace_existing=True)
        await store.save(spec_key(sid), spec.model_dump(mode="json"))
        ids.append(sid)
    return ids


async def load_spec(store: StateStore, scenario_id: str) -> BacktestSpec:
    """The stored spec of a scenario.

    Raises:
        ScenarioNotFoundError: no spec is stored for that id.
    """
    item = await store.get(spec_key(scenario_id))
    if item is None:
        raise ScenarioNotFoundError(scenario_id)
    return BacktestSpec.model_validate(item.value)
