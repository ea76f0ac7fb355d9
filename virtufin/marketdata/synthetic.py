"""The seeded synthetic bar generator: the embedded default market-data source.

Deterministic per partition: the random shocks of a bar are drawn from a hash of
(selector, symbol, date), so any (symbol, date) regenerates identically in any order, any
process, any run. The price path is continuous because the model's state (last close,
conditional variance, trend regime) is carried forward from a fixed epoch; a path is computed
once per process and cached.

The model, per session ``t`` (daily bars):

- conditional variance ``h_t = ω + α·ε²_{t-1} + β·h_{t-1}`` (GARCH(1,1): volatility clusters);
- a drift regime (bull / flat / bear) that switches with probability ``1/60`` per session
  (trends lasting about three months);
- an overnight gap carrying 20 % of the variance, wider after weekends and holidays (scaled by
  the square root of the calendar days since the previous session, at most ×2);
- high/low excursions beyond the open/close proportional to ``√h_t``; volume rising with the
  size of the move (volume-volatility correlation);
- sessions come from a `SessionCalendar`: weekends and holidays have no bar.

Example:
    >>> gen = SyntheticGenerator()
    >>> gen.bars("AAA", date(2024, 1, 2)).num_rows
    1
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Final

import numpy as np
import pyarrow as pa

from virtufin.errors import ConfigError
from virtufin.marketdata.calendar import SessionCalendar
from virtufin.marketdata.schema import (
    BAR_SCHEMA,
    DEFAULT_INTERVAL,
    DEFAULT_SELECTOR,
    empty_bars,
    validate_symbol,
)

__all__ = ["SYNTH_EPOCH", "SymbolProfile", "SyntheticGenerator"]

SYNTH_EPOCH: Final = date(2018, 1, 1)
"""The first date of every synthetic path; earlier dates have no bars."""

_ALPHA: Final = 0.08
_BETA: Final = 0.90
_GAP_SHARE: Final = 0.2
_SWITCH_PROB: Final = 1.0 / 60.0
_REGIME_DRIFT_ANNUAL: Final = (0.30, 0.0, -0.25)
_TRADING_DAYS: Final = 252.0
_UNIX_EPOCH: Final = date(1970, 1, 1)
_DAY_US: Final = 86_400_000_000
_F64 = np.ndarray[Any, np.dtype[np.float64]]


def _uniforms(key: str, count: int = 8) -> _F64:
    digest = hashlib.blake2b(key.encode(), digest_size=8 * count).digest()
    ints = np.frombuffer(digest, dtype="<u8").astype(np.float64)
    out: _F64 = (ints + 0.5) / 2.0**64
    return out


@dataclass(frozen=True, slots=True)
class SymbolProfile:
    """The per-symbol constants of a synthetic path (derived from the symbol's hash)."""

    price0: float
    vol_annual: float
    volume0: float

    @classmethod
    def of(cls, selector: str, symbol: str) -> SymbolProfile:
        u = _uniforms(f"{selector}|{symbol}|profile", 3)
        return cls(
            price0=round(math.exp(math.log(20.0) + u[0] * math.log(400.0 / 20.0)), 2),
            vol_annual=0.18 + 0.27 * float(u[1]),
            volume0=round(10 ** (5.0 + 1.5 * float(u[2]))),
        )


@dataclass(slots=True)
class _Path:
    """A computed path: parallel arrays over sessions, extended on demand."""

    days: list[date] = field(default_factory=list)
    index: dict[date, int] = field(default_factory=dict)
    ohlcv: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    close: float = 0.0
    h: float = 0.0
    eps: float = 0.0
    regime: int = 1
    until: date | None = None


class SyntheticGenerator:
    """Seeded, realistic daily bars for any symbol and date.

    Args:
        selector: the data universe; part of the seed, so two selectors differ.
        calendar: sessions (default `xnys`).
        epoch: where every path starts (default `SYNTH_EPOCH`).
        interval: only ``1d`` is generated.

    Raises:
        ConfigError: an interval other than ``1d``.
    """

    _cache: dict[tuple[str, str, str, date], _Path] = {}  # noqa: RUF012 - process-wide cache
    _lock = threading.Lock()

    def __init__(
        self,
        *,
        selector: str = DEFAULT_SELECTOR,
        calendar: SessionCalendar | None = None,
        epoch: date = SYNTH_EPOCH,
        interval: str = DEFAULT_INTERVAL,
    ) -> None:
        if interval != "1d":
            raise ConfigError("synthetic source", "interval", "only 1d bars are generated")
        self.selector = selector
        self.calendar = calendar if calendar is not None else SessionCalendar("xnys")
        self.epoch = epoch
        self.interval = interval

    def profile(self, symbol: str) -> SymbolProfile:
        return SymbolProfile.of(self.selector, symbol)

    # ---------------------------------------------------------------- public

    def bars(self, symbol: str, day: date) -> pa.Table:
        """The bar of `symbol` on `day` (no rows on a non-session or before the epoch)."""
        return self.bars_between(symbol, day, day)

    def bars_between(self, symbol: str, start: date, end: date) -> pa.Table:
        """Bars of `symbol` for sessions in ``[start, end]``, sorted by ``ts``."""
        validate_symbol(symbol)
        if end < self.epoch or end < start:
            return empty_bars()
        path = self._extended(symbol, end)
        days = [d for d in self.calendar.iter_sessions(max(start, self.epoch), end)]
        rows = [path.ohlcv[path.index[d]] for d in days]
        ts = [((d - _UNIX_EPOCH).days + 1) * _DAY_US for d in days]
        cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
        return pa.Table.from_arrays(
            [
                pa.array(ts, pa.int64()).cast(BAR_SCHEMA.field("ts").type),
                *(pa.array(c, pa.float64()) for c in cols),
                pa.array([symbol] * len(days), pa.string()),
                pa.array([self.interval] * len(days), pa.string()),
            ],
            schema=BAR_SCHEMA,
        )

    # ---------------------------------------------------------------- model

    def _extended(self, symbol: str, until: date) -> _Path:
        key = (self.selector, symbol, self.calendar.name, self.epoch)
        with self._lock:
            path = self._cache.get(key)
            if path is None:
                profile = self.profile(symbol)
                sigma2 = (profile.vol_annual / math.sqrt(_TRADING_DAYS)) ** 2
                path = _Path(close=profile.price0, h=sigma2, eps=0.0)
                self._cache[key] = path
            if path.until is None or path.until < until:
                start = self.epoch if path.until is None else path.until + timedelta(days=1)
                self._extend(path, symbol, start, date(until.year, 12, 31))
            return path

    def _extend(self, path: _Path, symbol: str, start: date, end: date) -> None:
        profile = self.profile(symbol)
        sigma2 = (profile.vol_annual / math.sqrt(_TRADING_DAYS)) ** 2
        omega = sigma2 * (1.0 - _ALPHA - _BETA)
        sigma = math.sqrt(sigma2)
        days = self.calendar.sessions(start, end)
        if not days:
            path.until = end
            return
        u = np.stack([_uniforms(f"{self.selector}|{symbol}|{d.isoformat()}") for d in days])
        radius = np.sqrt(-2.0 * np.log(u[:, 0:3]))
        angle = 2.0 * np.pi * u[:, 3:6]
        z = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        z_gap, z_intra, z_hi, z_lo, z_vol = (z[:, i] for i in range(5))
        u_switch, u_choice = u[:, 6], u[:, 7]
        prev_day = path.days[-1] if path.days else None
        close, h, eps, regime = path.close, path.h, path.eps, path.regime
        for i, day in enumerate(days):
            h = omega + _ALPHA * eps * eps + _BETA * h
            if u_switch[i] < _SWITCH_PROB:
                others = [r for r in range(3) if r != regime]
                regime = others[int(u_choice[i] * 2)]
            mu = _REGIME_DRIFT_ANNUAL[regime] / _TRADING_DAYS
            gap_days = 1 if prev_day is None else (day - prev_day).days
            gap = math.sqrt(_GAP_SHARE * h) * float(z_gap[i]) * min(math.sqrt(gap_days), 2.0)
            intra = mu + math.sqrt((1.0 - _GAP_SHARE) * h) * float(z_intra[i])
            eps = gap + intra - mu
            open_ = close * math.exp(gap)
            new_close = open_ * math.exp(intra)
            spread = 0.5 * math.sqrt(h)
            high = max(open_, new_close) * math.exp(abs(float(z_hi[i])) * spread)
            low = min(open_, new_close) * math.exp(-abs(float(z_lo[i])) * spread)
            shock = abs(eps) / sigma
            volume = round(profile.volume0 * math.exp(0.3 * float(z_vol[i])) * (0.6 + 0.4 * shock))
            path.index[day] = len(path.ohlcv)
            path.days.append(day)
            path.ohlcv.append(
                (round(open_, 4), round(high, 4), round(low, 4), round(new_close, 4), float(volume))
            )
            close, prev_day = new_close, day
        path.close, path.h, path.eps, path.regime = close, h, eps, regime
        path.until = end
