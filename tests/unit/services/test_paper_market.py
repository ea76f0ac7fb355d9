"""`LiveMarket` builds a tick's one-row bar only when something reads it.

The venue and the portfolio must see exactly what an eagerly built cursor shows (the bar's
columns, its equity row, every symbol's last close), whatever the mix of symbols, reads,
rewinds and restores; and a tick nobody reads must not build its bar at all.
"""

from __future__ import annotations

import random

import pytest

from services.execution import paper
from services.execution.paper import LiveMarket, MarketTick
from virtufin.backtest.data import parse_interval
from virtufin.backtest.market import MarketView
from virtufin.backtest.replay import BarBatch, SymbolTable


class EagerMarket:
    """The cursor as it was built before: every tick shown (built) and ended at once."""

    def __init__(self) -> None:
        self.view = MarketView()
        self.symbols = SymbolTable(venue="paper", selector="ACT")
        self.intervals: dict[str, str] = {}
        self.bars = 0

    def show(self, tick: MarketTick) -> None:
        interval = self.intervals.setdefault(tick.symbol, tick.interval)
        code = self.symbols.code(tick.symbol, interval)
        self.view.begin(paper._one_row(tick, code, parse_interval(interval), self.bars))
        self.bars += 1

    def end(self) -> None:
        self.view.end()


def _tick(symbol: str, ts_us: int, price: float) -> MarketTick:
    return MarketTick(symbol, "1s", ts_us, price, price + 1, price - 1, price + 0.5, 1.0)


def _read(view: MarketView, codes: list[int]) -> tuple[object, ...]:
    batch = view.batch
    assert batch is not None
    columns = (batch.ts, batch.start, batch.open, batch.close, batch.sym, batch.bar)
    return (
        view.code,
        view.ts_us,
        view.bar,
        tuple(float(c[view.row]) for c in columns),
        tuple(view.last(code) for code in codes),
    )


def test_lazy_cursor_reads_like_the_eager_one() -> None:
    rng = random.Random(7)
    live, eager = LiveMarket("paper"), EagerMarket()
    symbols = ["AAA", "BBB", "CCC"]
    clock = dict.fromkeys(symbols, 1_000_000)
    codes: list[int] = []
    for step in range(400):
        symbol = rng.choice(symbols)
        clock[symbol] += rng.randint(1, 3) * 1_000_000
        tick = _tick(symbol, clock[symbol], 100 + step)
        assert live.begin(tick)
        eager.show(tick)
        code = live.code(symbol, "1s")
        if code not in codes:
            codes.append(code)
        if rng.random() < 0.3:  # something (an order) reads the bar being handled
            assert _read(live.view, codes) == _read(eager.view, codes)
        live.end()
        eager.end()
        if rng.random() < 0.2:  # or reads between two ticks
            assert _read(live.view, codes) == _read(eager.view, codes)
        if rng.random() < 0.05:  # a late order: rewind, replay one later bar, restore
            history = list(live.history[symbol])
            found = live.rewind(symbol, history[max(0, len(history) - 3)].ts_us)
            assert found is not None
            at, later = found
            for replayed in (at, *later[:1]):
                live.show(replayed)
                eager.show(replayed)
                assert _read(live.view, codes) == _read(eager.view, codes)
                live.end()
                eager.end()
            live.restore(symbol)
            eager.show(live.history[symbol][-1])
            eager.end()
            assert live.current is not None
            eager.show(live.current)
            eager.end()
            assert _read(live.view, codes) == _read(eager.view, codes)
    assert live.started


def test_a_tick_nobody_reads_builds_no_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[MarketTick] = []
    one_row = paper._one_row

    def counting(tick: MarketTick, code: int, span: int, bar: int) -> BarBatch:
        built.append(tick)
        return one_row(tick, code, span, bar)

    monkeypatch.setattr(paper, "_one_row", counting)
    market = LiveMarket("paper")
    assert not market.started
    for n in range(50):
        assert market.begin(_tick("AAA" if n % 2 else "BBB", 1_000_000 * (n + 2), 100 + n))
        market.end()
    assert built == []
    assert market.started
    assert market.price("AAA") == 149 + 0.5
    assert built == []  # last prices need no bar
    assert market.view.last(market.code("BBB", "1s")) == (148 + 0.5, 1_000_000 * 50)
    assert market.view.bar == 49  # the equity row counts every tick, built or not
    assert [t.ts_us for t in built] == [1_000_000 * 51]  # the one read, built once


def test_stale_ticks_change_nothing() -> None:
    market = LiveMarket("paper")
    assert market.begin(_tick("AAA", 2_000_000, 100))
    market.end()
    assert not market.begin(_tick("AAA", 2_000_000, 999))
    assert not market.begin(_tick("AAA", 1_000_000, 999))
    assert market.price("AAA") == 100.5
    assert market.view.bar == 0
