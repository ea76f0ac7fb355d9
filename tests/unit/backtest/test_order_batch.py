"""Columnar orders from `on_batch`: checked on construction, expanded like single orders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from virtufin.backtest import BacktestConfig, TableBars, run_backtest
from virtufin.backtest.testkit import synthetic_bars
from virtufin.errors import ConfigError
from workers.kit import Worker
from workers.kit.batch import OrderBatch


def test_an_order_batch_expands_to_the_single_order_data() -> None:
    batch = OrderBatch(
        "AAA",
        rows=np.array([4, 2]),
        sides=np.array([-1, 1]),
        type="limit",
        limit_prices=[10.5, 9.5],
        sizing="units",
        qty=2.0,
        exclusive=False,
        reason="r",
        order_ids=["a", "b"],
    )
    assert list(batch.orders()) == [
        (4, {"symbol": "AAA", "side": "sell", "type": "limit", "qty": 2.0, "limit_price": 10.5,
             "sizing": "units", "exclusive": False, "reason": "r", "row": 4, "order_id": "a"}),
        (2, {"symbol": "AAA", "side": "buy", "type": "limit", "qty": 2.0, "limit_price": 9.5,
             "sizing": "units", "exclusive": False, "reason": "r", "row": 2, "order_id": "b"}),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": np.array([1.5]), "sides": np.array([1])}, "integer"),
        ({"rows": np.array([1, 2]), "sides": np.array([1])}, "sides has"),
        ({"rows": np.array([1]), "sides": np.array([2])}, r"\+1 \(buy\) or -1"),
        ({"rows": np.array([1]), "sides": np.array([1]), "type": "limit"}, "limit price"),
        ({"rows": np.array([1]), "sides": np.array([1]), "order_ids": []}, "one id per row"),
    ],
)
def test_a_malformed_order_batch_is_refused_when_built(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        OrderBatch("AAA", **kwargs)


class _OutOfRange(Worker):
    def on_event(self, event: Any) -> None:
        pass

    def on_batch(self, batch: pa.RecordBatch) -> list[OrderBatch]:
        return [OrderBatch("SYN", rows=np.array([batch.num_rows]), sides=np.array([1]))]


def test_rows_outside_the_batch_stop_the_run_with_a_config_error() -> None:
    worker = f"{Path(__file__).resolve()}:_OutOfRange"
    with pytest.raises(ConfigError, match="outside the batch"):
        run_backtest(worker, TableBars(synthetic_bars(100)), config=BacktestConfig(mode="batch"))
