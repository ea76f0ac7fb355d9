"""The simulated venue and the portfolio: lifecycle events, fill rules, costs, positions."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from virtufin.backtest import BAR_SCHEMA, BacktestConfig, BacktestResult, TableBars, run_backtest
from virtufin.bus.memory import MemoryBus

SCRIPTED = "virtufin.backtest.testkit:ScriptedOrders"
DAY_US = 86_400_000_000


def _bars(n: int = 8) -> TableBars:
    """Bar i: open 100+i, high open+2, low open-2, close open+0.5 (daily, symbol XYZ)."""
    opens = [100.0 + i for i in range(n)]
    table = pa.Table.from_pydict(
        {
            "ts": [(i + 1) * DAY_US for i in range(n)],
            "open": opens,
            "high": [o + 2 for o in opens],
            "low": [o - 2 for o in opens],
            "close": [o + 0.5 for o in opens],
            "volume": [1.0] * n,
            "symbol": ["XYZ"] * n,
            "interval": ["1d"] * n,
        },
        schema=BAR_SCHEMA,
    )
    return TableBars(table, selector="UNIT")


def _run(orders: list[dict[str, Any]], **config: Any) -> tuple[BacktestResult, list[Any]]:
    events: list[Any] = []
    bus = MemoryBus()
    bus.subscribe_sync("sc.>", lambda ev, d: events.append((d.topic.split(".", 2)[2], ev.data)))
    result = run_backtest(
        SCRIPTED,
        _bars(),
        params={"orders": orders},
        config=BacktestConfig(run_id="unit", **config),
        bus=bus,
    )
    return result, events


def _kinds(events: list[Any], prefix: str) -> list[str]:
    return [topic.rsplit(".", 1)[1] for topic, _ in events if topic.startswith(prefix)]


def test_lifecycle_positions_and_cash() -> None:
    result, events = _run(
        [
            {"at": 0, "side": "buy", "qty": 10},
            {"at": 1, "side": "buy", "qty": 5},
            {"at": 2, "side": "sell", "qty": 5},
            {"at": 3, "side": "sell", "qty": 20, "reason": "flip short"},
            {"at": 4, "side": "buy", "qty": 10, "exclusive": True},
            {"at": 6, "side": "buy", "qty": 1, "type": "limit", "limit_price": 50.0},
        ],
        commission_rate=0.001,
    )
    assert [(o.order_id, o.status, o.filled_qty, o.avg_price) for o in result.orders] == [
        ("o1", "filled", 10.0, 101.0),
        ("o2", "filled", 5.0, 102.0),
        ("o3", "filled", 5.0, 103.0),
        ("o4", "filled", 20.0, 104.0),
        ("o5", "filled", 10.0, 105.0),
        ("o5-close", "filled", 10.0, 105.0),
        ("o6", "cancelled", 0.0, None),
    ]
    assert result.orders[-1].status_reason == "end of data"
    assert _kinds(events, "position.XYZ") == [
        "opened", "increased", "decreased", "flipped", "closed", "opened",
    ]  # fmt: skip
    submitted = [d for t, d in events if t == "trading.order.submitted"]
    assert [d["order_id"] for d in submitted] == ["o1", "o2", "o3", "o4", "o5", "o6"]
    fill = next(d for t, d in events if t == "trading.order.filled")
    assert fill == {
        "order_id": "o1",
        "symbol": "XYZ",
        "side": "buy",
        "fill_id": "o1-f1",
        "qty_filled": 10.0,
        "price": 101.0,
        "fee": pytest.approx(1.01),
        "liquidity": "taker",
        "remaining_qty": 0.0,
        "filled_at": "1970-01-02T00:00:00Z",
        "realized_pnl": 0.0,
        "venue": "sim",
        "position_qty": 10.0,
        "reason": "scripted",  # the order's, so that the trade it opens is tagged with it
    }
    # FIFO trades: 5 of lot 1; the rest of lot 1 and lot 2 on the flip; the short on o5.
    assert [(t.size, t.entry_price, t.exit_price, t.tag) for t in result.trades] == [
        (5.0, 101.0, 103.0, "scripted"),
        (5.0, 101.0, 104.0, "scripted"),
        (5.0, 102.0, 104.0, "scripted"),
        (-10.0, 104.0, 105.0, "flip short"),  # tagged by the order that opened the short
    ]
    assert result.trades[0].pnl == pytest.approx(5 * 2 - 5 * (0.101 + 0.103))
    traded = [(10, 101), (5, 102), (-5, 103), (-20, 104), (10, 105), (10, 105)]
    cash = 10_000 - sum(q * p + abs(q) * p * 0.001 for q, p in traded)
    assert result.equity_final == pytest.approx(cash + 10 * 107.5, abs=1e-9)
    realized = [d["realized_pnl"] for t, d in events if t == "pnl.realized.update"]
    assert realized[-1] == pytest.approx(sum(t.pnl for t in result.trades))


def test_rejections() -> None:
    result, events = _run(
        [
            {"at": 0, "side": "hold", "qty": 1},
            {"at": 0, "side": "buy", "qty": 1_000_000},
            {"at": 0, "side": "buy", "qty": 1, "symbol": "NOPE"},
            {"at": 0, "side": "buy", "sizing": "all_in", "qty": 3},
        ]
    )
    assert [(o.status, o.status_reason) for o in result.orders] == [
        ("rejected", "side must be buy or sell ('hold')"),
        ("rejected", "insufficient margin"),
        ("rejected", "unknown symbol 'NOPE'"),
        ("rejected", "sizing=all_in takes qty=null"),
    ]
    # Breadth-first bus: the four submissions first, the venue's answers after them, and the
    # margin check of o2 at its fill on the next bar.
    assert _kinds(events, "trading.order") == [
        "submitted", "submitted", "submitted", "submitted",
        "rejected", "accepted", "rejected", "rejected", "rejected",
    ]  # fmt: skip
    assert result.trades == ()


def test_all_in_sizes_like_backtesting_py() -> None:
    result, _ = _run([{"at": 0, "side": "buy", "sizing": "all_in"}], commission_rate=0.002)
    # int(10 000 * (1 - eps) // (101 * 1.002)) whole units at the next open
    assert result.orders[0].filled_qty == 98.0


def test_limit_order_fills_at_the_better_of_open_and_limit() -> None:
    result, _ = _run([{"at": 0, "side": "buy", "qty": 1, "type": "limit", "limit_price": 99.5}])
    assert (result.orders[0].avg_price, result.orders[0].filled_bar) == (99.5, 1)
    result, _ = _run([{"at": 0, "side": "sell", "qty": 1, "type": "limit", "limit_price": 104.5}])
    assert (result.orders[0].avg_price, result.orders[0].filled_bar) == (104.5, 3)


def test_fill_at_close_and_slippage() -> None:
    result, _ = _run([{"at": 0, "side": "buy", "qty": 10}], fill="close")
    assert (result.orders[0].avg_price, result.orders[0].filled_bar) == (100.5, 0)
    result, _ = _run([{"at": 0, "side": "buy", "qty": 10}], slippage_rate=0.01)
    assert result.orders[0].avg_price == pytest.approx(101 * 1.01)


def test_exclusive_cancels_pending_orders() -> None:
    result, events = _run(
        [
            {"at": 2, "side": "buy", "qty": 10, "type": "limit", "limit_price": 50.0},
            {"at": 3, "side": "sell", "qty": 1, "exclusive": True},
        ]
    )
    assert [(o.order_id, o.status, o.status_reason) for o in result.orders] == [
        ("o1", "cancelled", "exclusive"),
        ("o2", "filled", ""),
    ]
    assert "cancelled" in _kinds(events, "trading.order")


def test_finalize_trades_closes_at_the_last_close() -> None:
    result, _ = _run([{"at": 0, "side": "buy", "qty": 10}], finalize_trades=True)
    assert [(t.entry_price, t.exit_price, t.exit_bar) for t in result.trades] == [(101.0, 107.5, 7)]
    assert result.stats["# Trades"] == 1


def test_a_failing_event_is_counted_and_the_run_goes_on() -> None:
    result, _ = _run([{"at": 1, "fail": "boom"}, {"at": 2, "side": "buy", "qty": 1}])
    assert result.worker_errors == 1
    assert [o.status for o in result.orders] == ["filled"]
