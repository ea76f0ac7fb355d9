"""backtesting.py's statistics (`backtesting/_stats.py` `compute_stats`), computed streaming.

The equity curve arrives batch by batch and is never held whole: drawdowns, drawdown
episodes, period returns (Welford/Chan merges), and the equity/market covariance for beta are
accumulated as the batches pass, and trades as they close (`TradeStats`), so memory stays flat
however long the run. Formulas and labels are backtesting.py's, including its
quirks (geometric mean of period returns, compounded volatility, bars-based exposure). The
equity index is the bar *label*, i.e. the bar's start, as backtesting.py's ``Date`` index is.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import numpy as np

from virtufin.backtest.equity import EquityRows

__all__ = ["METRICS", "Stats", "StatsAccumulator", "TradeLike", "TradeStats"]

F64 = np.ndarray[Any, np.dtype[np.float64]]
I64 = np.ndarray[Any, np.dtype[np.int64]]
_DAY_US: Final = 86_400_000_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_RESOLUTIONS: Final = (
    ("D", _DAY_US),
    ("h", 3_600_000_000),
    ("min", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1_000),
    ("us", 1),
)

#: (label as backtesting.py prints it, JSON key). Durations are `timedelta`s (days in JSON).
METRICS: Final[tuple[tuple[str, str], ...]] = (
    ("Start", "start"),
    ("End", "end"),
    ("Duration", "duration_days"),
    ("Exposure Time [%]", "exposure_time_pct"),
    ("Equity Final [$]", "equity_final"),
    ("Equity Peak [$]", "equity_peak"),
    ("Commissions [$]", "commissions"),
    ("Return [%]", "return_pct"),
    ("Buy & Hold Return [%]", "buy_and_hold_return_pct"),
    ("Return (Ann.) [%]", "return_ann_pct"),
    ("Volatility (Ann.) [%]", "volatility_ann_pct"),
    ("CAGR [%]", "cagr_pct"),
    ("Sharpe Ratio", "sharpe_ratio"),
    ("Sortino Ratio", "sortino_ratio"),
    ("Calmar Ratio", "calmar_ratio"),
    ("Alpha [%]", "alpha_pct"),
    ("Beta", "beta"),
    ("Max. Drawdown [%]", "max_drawdown_pct"),
    ("Avg. Drawdown [%]", "avg_drawdown_pct"),
    ("Max. Drawdown Duration", "max_drawdown_duration_days"),
    ("Avg. Drawdown Duration", "avg_drawdown_duration_days"),
    ("# Trades", "trades"),
    ("Win Rate [%]", "win_rate_pct"),
    ("Best Trade [%]", "best_trade_pct"),
    ("Worst Trade [%]", "worst_trade_pct"),
    ("Avg. Trade [%]", "avg_trade_pct"),
    ("Max. Trade Duration", "max_trade_duration_days"),
    ("Avg. Trade Duration", "avg_trade_duration_days"),
    ("Profit Factor", "profit_factor"),
    ("Expectancy [%]", "expectancy_pct"),
    ("SQN", "sqn"),
    ("Kelly Criterion", "kelly_criterion"),
)


class TradeLike(Protocol):
    """What the statistics read from a closed trade (see `virtufin.backtest.portfolio.Trade`)."""

    @property
    def entry_bar(self) -> int: ...
    @property
    def exit_bar(self) -> int: ...
    @property
    def pnl(self) -> float: ...
    @property
    def return_pct(self) -> float: ...
    @property
    def commission(self) -> float: ...
    @property
    def entry_time_us(self) -> int: ...
    @property
    def exit_time_us(self) -> int: ...


class Stats:
    """The statistics table: labels in backtesting.py's order, values by label."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def __getitem__(self, label: str) -> Any:
        return self.values[label]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def get(self, label: str, default: Any = None) -> Any:
        return self.values.get(label, default)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: snake_case keys, times RFC 3339, durations in days, NaN as null."""
        out: dict[str, Any] = {}
        for label, key in METRICS:
            if label not in self.values:
                continue
            value = self.values[label]
            if isinstance(value, datetime):
                value = value.isoformat().replace("+00:00", "Z")
            elif isinstance(value, timedelta):
                value = value / timedelta(days=1)
            elif isinstance(value, float) and not math.isfinite(value):
                value = None
            out[key] = value
        return out

    def table(self) -> str:
        """The table as backtesting.py prints it (5 significant decimals)."""
        width = max(len(label) for label in self.values)
        lines = []
        for label, value in self.values.items():
            lines.append(f"{label:<{width}}  {_fmt(value):>20}")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, timedelta):
        days, rest = divmod(int(value.total_seconds()), 86_400)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{days} days {hours:02d}:{minutes:02d}:{seconds:02d}"
    if isinstance(value, float):
        return "--" if not math.isfinite(value) else f"{value:.5f}".rstrip("0").rstrip(".")
    return str(value)


# --------------------------------------------------------------------------- running moments


@dataclass(slots=True)
class _Moments:
    """Count, mean and M2 (Welford), merged batch-wise with Chan's formula."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values: F64) -> None:
        k = len(values)
        if not k:
            return
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        total = self.n + k
        delta = mean - self.mean
        self.m2 += m2 + delta * delta * self.n * k / total
        self.mean += delta * k / total
        self.n = total

    def add_one(self, value: float) -> None:
        self.n += 1
        delta = value - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (value - self.mean)

    def var(self, ddof: int = 1) -> float:
        return self.m2 / (self.n - ddof) if self.n > ddof else math.nan


@dataclass(slots=True)
class _CoMoments:
    """Running covariance of (x, y) and variance of y, for beta = cov(x, y) / var(y)."""

    n: int = 0
    mx: float = 0.0
    my: float = 0.0
    cxy: float = 0.0
    m2y: float = 0.0
    finite: bool = True

    def add(self, x: F64, y: F64) -> None:
        k = len(x)
        if not k:
            return
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            self.finite = False
        mx, my = float(x.mean()), float(y.mean())
        cxy = float(((x - mx) * (y - my)).sum())
        m2y = float(((y - my) ** 2).sum())
        total = self.n + k
        dx, dy = mx - self.mx, my - self.my
        self.cxy += cxy + dx * dy * self.n * k / total
        self.m2y += m2y + dy * dy * self.n * k / total
        self.mx += dx * k / total
        self.my += dy * k / total
        self.n = total

    def beta(self) -> float:
        if self.n <= 1 or not self.finite:
            return math.nan
        return self.cxy / self.m2y if self.m2y else math.nan


@dataclass(slots=True)
class _PeriodReturns:
    """``equity.resample(freq).last().dropna().pct_change().dropna()`` as running sums."""

    freq: str
    key: int | None = None
    value: float = math.nan
    prev_closed: float | None = None
    moments: _Moments = field(default_factory=_Moments)
    log_sum: float = 0.0
    nonpositive: bool = False
    downside_sq: float = 0.0

    def _keys(self, label: I64) -> I64:
        days = label // _DAY_US
        if self.freq == "D":
            return days
        if self.freq == "W":  # weeks ending on Sunday (pandas "W" = "W-SUN")
            return (days + 3) // 7
        unit = "M" if self.freq == "ME" else "Y"
        out: I64 = label.astype("datetime64[us]").astype(f"datetime64[{unit}]").astype(np.int64)
        return out

    def add(self, label: I64, equity: F64) -> None:
        if not len(label):
            return
        keys = self._keys(label)
        ends = np.flatnonzero(keys[1:] != keys[:-1])
        closed = equity[ends]
        if self.key is not None and self.key != keys[0]:
            closed = np.concatenate(([self.value], closed))
        self.key, self.value = int(keys[-1]), float(equity[-1])
        self._closed(closed)

    def _closed(self, values: F64) -> None:
        if not len(values):
            return
        if self.prev_closed is not None:
            values = np.concatenate(([self.prev_closed], values))
        self.prev_closed = float(values[-1])
        if len(values) < 2:
            return
        with np.errstate(divide="ignore", invalid="ignore"):
            returns = values[1:] / values[:-1] - 1
        self.moments.add(returns)
        gross = returns + 1
        if (gross <= 0).any():
            self.nonpositive = True
        else:
            self.log_sum += float(np.log(gross).sum())
        self.downside_sq += float((np.minimum(returns, 0) ** 2).sum())

    def finish(self) -> None:
        if self.key is not None:
            self._closed(np.array([self.value]))
            self.key = None

    def geometric_mean(self) -> float:
        if self.nonpositive:
            return 0.0
        return math.exp(self.log_sum / self.moments.n) - 1 if self.moments.n else math.nan


# --------------------------------------------------------------------------- the accumulator


class StatsAccumulator:
    """Feed equity rows (and the market's closes) batch by batch, then `compute` the table."""

    def __init__(self, *, risk_free_rate: float = 0.0) -> None:
        self.risk_free_rate = risk_free_rate
        self.rows = 0
        self.first_label: int | None = None
        self.last_label = 0
        self.first_equity = math.nan
        self.last_equity = math.nan
        self.peak = -math.inf
        self.max_dd = 0.0
        self._tail = np.empty(0, dtype=np.int64)
        self._weekend_rows = 0
        self._periods: dict[str, _PeriodReturns] = {"D": _PeriodReturns("D")}
        self._dd_last_zero_row = 0
        self._dd_last_zero_label = 0
        self._dd_running_peak = 0.0
        self._dd_count = 0
        self._dd_duration_sum = 0
        self._dd_duration_max = 0
        self._dd_peak_sum = 0.0
        self._beta = _CoMoments()
        self._prev_equity: float | None = None
        self._prev_close: float | None = None
        self.trades = TradeStats()

    def add_trade(self, trade: TradeLike) -> None:
        """A closed trade (the portfolio calls this as trades close)."""
        self.trades.add(trade)

    # ---------------------------------------------------------------- feeding

    def add(self, rows: EquityRows, closes: F64 | None) -> None:
        """`closes`: the single market's close per row, or None for several symbols."""
        n = len(rows)
        if not n:
            return
        label, equity = rows.label, rows.equity
        if self.first_label is None:
            self.first_label = int(label[0])
            self.first_equity = float(equity[0])
            self._choose_periods(label)
        start_row = self.rows
        self.rows += n
        self.last_label = int(label[-1])
        self.last_equity = float(equity[-1])
        self._tail = np.concatenate((self._tail, label[-100:]))[-100:]
        self._weekend_rows += int((((label // _DAY_US) + 3) % 7 >= 5).sum())
        for period in self._periods.values():
            period.add(label, equity)
        self._drawdowns(start_row, label, equity)
        self._market(rows, equity, closes)

    def _choose_periods(self, label: I64) -> None:
        days = _median_diff(label[:101]) // _DAY_US
        freq = {7: "W", 31: "ME", 365: "YE"}.get(int(days))
        if freq is not None:
            self._periods[freq] = _PeriodReturns(freq)

    def _drawdowns(self, start_row: int, label: I64, equity: F64) -> None:
        peak = np.maximum.accumulate(np.concatenate(([self.peak], equity)))[1:]
        self.peak = float(peak[-1])
        with np.errstate(divide="ignore", invalid="ignore"):
            dd = 1 - equity / peak
        self.max_dd = max(self.max_dd, float(np.nanmax(dd)))
        zeros = np.flatnonzero(dd == 0)
        if not len(zeros):
            self._dd_running_peak = max(self._dd_running_peak, float(np.nanmax(dd)))
            return
        # Episodes between consecutive zero-drawdown rows that are more than one row apart.
        rows = np.concatenate(([self._dd_last_zero_row], zeros + start_row))
        labels = np.concatenate(([self._dd_last_zero_label], label[zeros]))
        # seg_max[i]: the deepest drawdown after the previous zero, up to zero i inclusive
        seg_max = np.maximum.reduceat(dd[: zeros[-1] + 1], np.concatenate(([0], zeros[:-1] + 1)))
        first_seg = max(self._dd_running_peak, float(seg_max[0]))
        peaks = np.concatenate(([first_seg], seg_max[1:]))
        gaps = rows[1:] > rows[:-1] + 1
        durations = (labels[1:] - labels[:-1])[gaps]
        if len(durations):
            self._dd_count += len(durations)
            self._dd_duration_sum += int(durations.sum())
            self._dd_duration_max = max(self._dd_duration_max, int(durations.max()))
            self._dd_peak_sum += float(peaks[gaps].sum())
        self._dd_last_zero_row = int(rows[-1])
        self._dd_last_zero_label = int(labels[-1])
        tail = dd[zeros[-1] + 1 :]
        self._dd_running_peak = float(np.nanmax(tail)) if len(tail) else 0.0

    def _market(self, rows: EquityRows, equity: F64, closes: F64 | None) -> None:
        if closes is None:
            return
        if self._prev_equity is not None and self._prev_close is not None:
            eq = np.concatenate(([self._prev_equity], equity))
            cl = np.concatenate(([self._prev_close], closes))
        else:
            eq, cl = equity, closes
        with np.errstate(divide="ignore", invalid="ignore"):
            self._beta.add(np.log(eq[1:] / eq[:-1]), np.log(cl[1:] / cl[:-1]))
        self._prev_equity, self._prev_close = float(equity[-1]), float(closes[-1])

    # ---------------------------------------------------------------- result

    def compute(
        self,
        *,
        buy_and_hold_pct: float,
        single_market: bool = True,
    ) -> Stats:
        """The table; `single_market=False` leaves Alpha/Beta undefined (NaN)."""
        s: dict[str, Any] = {}
        n = self.rows
        if not n or self.first_label is None:
            return Stats({"# Trades": self.trades.count})
        for period in self._periods.values():
            period.finish()
        start, end = _dt(self.first_label), _dt(self.last_label)
        s["Start"], s["End"] = start, end
        s["Duration"] = end - start
        s["Exposure Time [%]"] = self.trades.spans.covered() / n * 100
        s["Equity Final [$]"] = self.last_equity
        s["Equity Peak [$]"] = self.peak
        commissions = self.trades.commissions
        if commissions:
            s["Commissions [$]"] = commissions
        s["Return [%]"] = (self.last_equity - self.first_equity) / self.first_equity * 100
        s["Buy & Hold Return [%]"] = buy_and_hold_pct

        period_us = _median_diff(self._tail)
        freq_days = period_us // _DAY_US
        have_weekends = self._weekend_rows / n > 2 / 7 * 0.6
        annual = {7: 52, 31: 12, 365: 1}.get(freq_days, 365 if have_weekends else 252)
        freq = {7: "W", 31: "ME", 365: "YE"}.get(freq_days, "D")
        returns = self._periods.get(freq, self._periods["D"])
        gmean = returns.geometric_mean() if returns.moments.n else 0.0
        var = returns.moments.var(ddof=1)
        annualized = (1 + gmean) ** annual - 1
        s["Return (Ann.) [%]"] = annualized * 100
        s["Volatility (Ann.) [%]"] = (
            math.sqrt(max(0.0, (var + (1 + gmean) ** 2) ** annual - (1 + gmean) ** (2 * annual)))
            * 100
            if math.isfinite(var)
            else math.nan
        )
        duration = s["Duration"]
        years = (duration.days + duration.seconds / 86400) / 365.25
        growth = self.last_equity / self.first_equity
        # numpy's float64 ** fraction: NaN for a negative base (Python's float gives a complex)
        s["CAGR [%]"] = (growth ** (1 / years) - 1) * 100 if years and growth >= 0 else math.nan
        rf = self.risk_free_rate
        vol = s["Volatility (Ann.) [%]"]
        s["Sharpe Ratio"] = (s["Return (Ann.) [%]"] - rf * 100) / vol if vol else math.nan
        downside = (
            math.sqrt(returns.downside_sq / returns.moments.n) * math.sqrt(annual)
            if returns.moments.n
            else math.nan
        )
        excess = annualized - rf
        if downside:
            s["Sortino Ratio"] = excess / downside
        else:  # numpy's x / 0 under errstate(divide="ignore")
            s["Sortino Ratio"] = math.copysign(math.inf, excess) if excess else math.nan
        max_dd = -self.max_dd
        s["Calmar Ratio"] = annualized / -max_dd if max_dd else math.nan
        beta = self._beta.beta() if single_market else math.nan
        s["Alpha [%]"] = s["Return [%]"] - rf * 100 - beta * (buy_and_hold_pct - rf * 100)
        s["Beta"] = beta
        s["Max. Drawdown [%]"] = max_dd * 100
        episodes, total, longest, depth = self._finish_drawdowns(n)
        s["Avg. Drawdown [%]"] = -depth / episodes * 100 if episodes else math.nan
        resolution = _resolution_us(period_us)
        s["Max. Drawdown Duration"] = _ceil(longest, resolution) if episodes else math.nan
        s["Avg. Drawdown Duration"] = _ceil(total / episodes, resolution) if episodes else math.nan
        s.update(self.trades.table(resolution))
        return Stats(s)

    def _finish_drawdowns(self, n: int) -> tuple[int, int, int, float]:
        """(episodes, summed duration, longest duration, summed depth), the open one included."""
        count, total = self._dd_count, self._dd_duration_sum
        longest, depth = self._dd_duration_max, self._dd_peak_sum
        if n - 1 > self._dd_last_zero_row + 1:
            duration = self.last_label - self._dd_last_zero_label
            count, total, depth = count + 1, total + duration, depth + self._dd_running_peak
            longest = max(longest, duration)
        return count, total, longest, depth


# --------------------------------------------------------------------------- helpers


def _dt(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _median_diff(label: I64) -> int:
    diffs = np.diff(label)
    return int(np.median(diffs)) if len(diffs) else 0


def _resolution_us(period_us: int) -> int:
    """pandas' `Timedelta.resolution_string` as microseconds: the finest non-zero unit."""
    finest, rest = _DAY_US, period_us
    for _, size in _RESOLUTIONS:
        part, rest = divmod(rest, size)
        if part:
            finest = size
    return finest


def _ceil(micros: float, resolution: int) -> timedelta:
    return timedelta(microseconds=math.ceil(micros / resolution) * resolution)


class _Spans:
    """Union of closed bar ranges ``[entry_bar, exit_bar]`` as sorted disjoint spans: a
    strategy that is always in the market keeps one span however many trades it makes."""

    __slots__ = ("ends", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        starts, ends = self.starts, self.ends
        lo = bisect.bisect_left(ends, start - 1)  # first span that may touch [start, end]
        hi = bisect.bisect_right(starts, end + 1)  # spans from here start after it
        if lo < hi:
            start, end = min(start, starts[lo]), max(end, ends[hi - 1])
        starts[lo:hi] = [start]
        ends[lo:hi] = [end]

    def covered(self) -> int:
        return sum(e - s + 1 for s, e in zip(self.starts, self.ends, strict=True))


class TradeStats:
    """backtesting.py's trade statistics as running sums (no list of trades needed)."""

    def __init__(self) -> None:
        self.count = 0
        self.commissions = 0.0
        self.spans = _Spans()
        self._pnl = _Moments()
        self._ret_sum = 0.0
        self._ret_max = -math.inf
        self._ret_min = math.inf
        self._ret_pos = 0.0
        self._ret_neg = 0.0
        self._log_gross = 0.0
        self._nonpositive = False
        self._wins = self._losses = 0
        self._win_sum = self._loss_sum = 0.0
        self._dur_sum = 0
        self._dur_max = 0

    def add(self, trade: TradeLike) -> None:
        self.count += 1
        self.commissions += trade.commission
        self.spans.add(trade.entry_bar, trade.exit_bar)
        pnl, ret = trade.pnl, trade.return_pct
        self._pnl.add_one(pnl)
        self._ret_sum += ret
        self._ret_max = max(self._ret_max, ret)
        self._ret_min = min(self._ret_min, ret)
        if ret > 0:
            self._ret_pos += ret
        elif ret < 0:
            self._ret_neg += ret
        if ret + 1 <= 0:
            self._nonpositive = True
        else:
            self._log_gross += math.log(ret + 1)
        if pnl > 0:
            self._wins += 1
            self._win_sum += pnl
        elif pnl < 0:
            self._losses += 1
            self._loss_sum += pnl
        duration = trade.exit_time_us - trade.entry_time_us
        self._dur_sum += duration
        self._dur_max = max(self._dur_max, duration)

    def table(self, resolution: int) -> dict[str, Any]:
        s: dict[str, Any] = {}
        count = self.count
        s["# Trades"] = count
        win_rate = self._wins / count if count else math.nan
        s["Win Rate [%]"] = win_rate * 100
        s["Best Trade [%]"] = self._ret_max * 100 if count else math.nan
        s["Worst Trade [%]"] = self._ret_min * 100 if count else math.nan
        if not count:
            mean_return = math.nan
        elif self._nonpositive:
            mean_return = 0.0
        else:
            mean_return = math.exp(self._log_gross / count) - 1
        s["Avg. Trade [%]"] = mean_return * 100
        s["Max. Trade Duration"] = _ceil(self._dur_max, resolution) if count else math.nan
        s["Avg. Trade Duration"] = _ceil(self._dur_sum / count, resolution) if count else math.nan
        losses = abs(self._ret_neg)
        s["Profit Factor"] = self._ret_pos / losses if losses else math.nan
        s["Expectancy [%]"] = self._ret_sum / count * 100 if count else math.nan
        std = math.sqrt(self._pnl.var(ddof=1)) if count > 1 else math.nan
        s["SQN"] = math.sqrt(count) * self._pnl.mean / std if count and std else math.nan
        ratio = (
            (self._win_sum / self._wins) / -(self._loss_sum / self._losses)
            if self._wins and self._losses
            else math.nan
        )
        s["Kelly Criterion"] = win_rate - (1 - win_rate) / ratio if ratio else math.nan
        return s
