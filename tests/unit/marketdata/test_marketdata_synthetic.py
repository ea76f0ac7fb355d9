"""The synthetic generator: deterministic per partition, realistic, calendar-aware."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from virtufin.errors import ConfigError
from virtufin.marketdata import BAR_SCHEMA, SessionCalendar, SyntheticGenerator, split_valid


@pytest.fixture(scope="module")
def year() -> dict[str, np.ndarray]:
    table = SyntheticGenerator().bars_between("AAA", date(2019, 1, 1), date(2024, 12, 31))
    return {name: table.column(name).to_numpy() for name in ("open", "high", "low", "close")}


def test_a_partition_regenerates_identically_in_any_order_and_process() -> None:
    first = SyntheticGenerator().bars("AAA", date(2024, 5, 15))
    SyntheticGenerator._cache.clear()
    SyntheticGenerator().bars("AAA", date(2024, 12, 31))
    SyntheticGenerator._cache.clear()
    assert SyntheticGenerator().bars("AAA", date(2024, 5, 15)).equals(first)
    assert SyntheticGenerator(selector="OTHER").bars("AAA", date(2024, 5, 15)) != first
    assert first.schema == BAR_SCHEMA


def test_weekends_and_holidays_have_no_bar_and_close_time_is_end_of_day() -> None:
    gen = SyntheticGenerator()
    assert gen.bars("AAA", date(2024, 7, 4)).num_rows == 0
    assert gen.bars("AAA", date(2024, 7, 6)).num_rows == 0
    [row] = gen.bars("AAA", date(2024, 7, 5)).to_pylist()
    assert row["ts"].isoformat() == "2024-07-06T00:00:00+00:00"
    assert gen.bars("AAA", date(2017, 12, 29)).num_rows == 0  # before the epoch


def test_every_generated_bar_passes_validation() -> None:
    table = SyntheticGenerator().bars_between("BBB", date(2024, 1, 1), date(2024, 12, 31))
    checked = split_valid(table, calendar=SessionCalendar("xnys"), source="synthetic")
    assert checked.rejected.num_rows == 0
    assert checked.good.num_rows == 252


def test_volatility_clusters_and_overnight_gaps_are_present(year: dict[str, np.ndarray]) -> None:
    returns = np.diff(np.log(year["close"]))
    squared = returns**2 - (returns**2).mean()
    autocorrelation = (squared[1:] * squared[:-1]).mean() / squared.var()
    assert autocorrelation > 0.05  # GARCH: big moves follow big moves
    gaps = year["open"][1:] / year["close"][:-1] - 1
    assert np.abs(gaps).mean() > 0.001
    annual_vol = returns.std() * np.sqrt(252)
    assert 0.1 < annual_vol < 0.8


def test_only_daily_bars_are_generated() -> None:
    with pytest.raises(ConfigError, match="only 1d"):
        SyntheticGenerator(interval="1h")
