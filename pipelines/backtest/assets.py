"""Backtest assets, one partition per scenario: the checked data window, then the results.

Both follow new market data declaratively: `market_data_window` is requested when any
`daily_bars` partition updates (or when its scenario partition is new), `backtest_results`
eagerly after its window. The automation sensor in `pipelines.definitions` evaluates them.
"""

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pipelines.backtest.checks import worker_errors_result, worker_errors_spec
from pipelines.backtest.partitions import scenario_partitions
from pipelines.backtest.plots import equity_plot_png, markdown_image
from pipelines.backtest.runner import HEADLINE_METRICS, run_spec
from pipelines.backtest.specs import load_spec
from pipelines.ingestion.assets import DAILY_BARS
from pipelines.ingestion.checks import QualityTally, bar_check_specs
from pipelines.resources import StateStoreResource, StorageResource
from virtufin.backtest import BacktestResult
from virtufin.marketdata import SessionCalendar, missing_sessions, read_range

__all__ = [
    "BACKTEST_GROUP",
    "BACKTEST_RESULTS",
    "MARKET_DATA_WINDOW",
    "BacktestRunConfig",
    "backtest_results",
    "market_data_window",
    "metadata_of",
    "result_metadata",
    "results_metrics",
]

BACKTEST_GROUP: Final = "backtest"
MARKET_DATA_WINDOW: Final = "market_data_window"
BACKTEST_RESULTS: Final = "backtest_results"
_TABLE_ROWS: Final = 20

#: eager(), minus "no dependency partition missing": a scenario reads a window of the bar
#: dataset, not every (date, symbol) partition since the start date.
WINDOW_AUTOMATION: Final = (
    dg.AutomationCondition.eager()
    .without(~dg.AutomationCondition.any_deps_missing())
    .with_label("eager_on_new_bars")
)


class BacktestRunConfig(dg.Config):
    """Knobs of one backtest run."""

    replay_mode: str = Field(
        default="event",
        description="event: one bar event per bar through the bus; batch: on_batch workers",
    )
    finalize_trades: bool = Field(
        default=False, description="close open positions on the last bar so they count"
    )


def _digest(table: pa.Table) -> str:
    """A content digest of a window (ts, symbol, close), to tie results to data."""
    h = hashlib.sha256()
    for name in ("ts", "symbol", "close"):
        h.update(pc.cast(table.column(name), pa.string()).combine_chunks().buffers()[2] or b"")
    return h.hexdigest()[:16]


@dg.asset(
    name=MARKET_DATA_WINDOW,
    group_name=BACKTEST_GROUP,
    partitions_def=scenario_partitions,
    deps=[dg.AssetDep(DAILY_BARS, partition_mapping=dg.AllPartitionMapping())],
    check_specs=bar_check_specs(MARKET_DATA_WINDOW, quarantine=True),
    automation_condition=WINDOW_AUTOMATION,
    kinds={"parquet"},
)
def market_data_window(
    context: dg.AssetExecutionContext, state: StateStoreResource, storage: StorageResource
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    """The scenario's slice of the bar dataset, checked before it is replayed."""
    sid = context.partition_key
    spec = state.run(lambda store: load_spec(store, sid))
    symbols = list(spec.symbols)
    table = read_range(storage.data_root, spec.selector, symbols, spec.start, spec.end)
    rejected = read_range(
        storage.data_root, spec.selector, symbols, spec.start, spec.end, quarantine=True
    )
    tally = QualityTally()
    where = f"{spec.selector} {spec.start}..{spec.end}"
    tally.add_stored(table, where)
    tally.add_quarantined(rejected, where, window=True)
    tally.add_gaps(
        missing_sessions(table, SessionCalendar(spec.calendar), symbols, spec.start, spec.end)
    )
    if tally.failed:
        context.log.warning(f"window checks failing: {', '.join(tally.failed)}")
    yield dg.MaterializeResult(
        metadata={
            "selector": spec.selector,
            "symbols": ", ".join(symbols),
            "start": spec.start.isoformat(),
            "end": spec.end.isoformat(),
            "rows": table.num_rows,
            "rows_quarantined": rejected.num_rows,
            "content_digest": _digest(table) if table.num_rows else "",
        }
    )
    yield from tally.results(MARKET_DATA_WINDOW, quarantine=True)


def metadata_of(metrics: dict[str, Any]) -> dict[str, Any]:
    """Headline metrics as asset metadata (finite numbers only)."""
    out: dict[str, Any] = {}
    for key in HEADLINE_METRICS:
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[key] = dg.MetadataValue.int(value) if isinstance(value, int) else float(value)
    return out


def result_metadata(result: BacktestResult, results_dir: Path, *, title: str) -> dict[str, Any]:
    """Metrics, plot (embedded PNG and its path), metrics and trades tables of a run."""
    metrics = result.stats.to_json()
    png = equity_plot_png(results_dir / "equity.parquet", title=title)
    plot_path = results_dir / "equity.png"
    plot_path.write_bytes(png)
    trades = [t.to_json() for t in result.trades[:_TABLE_ROWS]]
    return {
        **metadata_of(metrics),
        "bars": result.bars,
        "engine_secs": float(result.elapsed_secs),
        "results_dir": dg.MetadataValue.path(str(results_dir)),
        "equity_plot": dg.MetadataValue.md(markdown_image(png, alt=title)),
        "equity_plot_path": dg.MetadataValue.path(str(plot_path)),
        "metrics_table": _table(
            [{"metric": k, "value": v} for k, v in metrics.items()], ["metric", "value"]
        ),
        "trades_head": _table(
            trades, ["symbol", "size", "entry_time", "exit_time", "pnl", "return_pct"]
        ),
    }


def _table(rows: list[dict[str, Any]], columns: list[str]) -> dg.TableMetadataValue:
    schema = dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns])
    records = [dg.TableRecord({c: str(r.get(c, "")) for c in columns}) for r in rows]
    return dg.MetadataValue.table(records, schema=schema)


@dg.asset(
    name=BACKTEST_RESULTS,
    group_name=BACKTEST_GROUP,
    partitions_def=scenario_partitions,
    deps=[market_data_window],
    check_specs=[worker_errors_spec(BACKTEST_RESULTS)],
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"parquet"},
)
def backtest_results(
    context: dg.AssetExecutionContext,
    config: BacktestRunConfig,
    state: StateStoreResource,
    storage: StorageResource,
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    """Trades, orders, equity curve and metrics of the scenario's backtest."""
    sid = context.partition_key
    spec = state.run(lambda store: load_spec(store, sid))
    results_dir = storage.results_dir(sid, context.run.run_id)
    result = run_spec(
        spec,
        storage.data_root,
        scenario_id=sid,
        run_id=context.run.run_id,
        results_dir=results_dir,
        mode=config.replay_mode,
        finalize_trades=config.finalize_trades,
    )
    (results_dir / "spec.json").write_text(json.dumps(spec.model_dump(mode="json"), indent=2))
    yield dg.MaterializeResult(
        metadata={
            "strategy": spec.strategy_id,
            "params": dg.MetadataValue.json(spec.params),
            **result_metadata(result, results_dir, title=f"{sid} {spec.strategy_id}"),
        }
    )
    yield worker_errors_result(BACKTEST_RESULTS, result.worker_errors)


def results_metrics(results_dir: Path) -> dict[str, Any]:
    """The metrics a run wrote to ``metrics.json``."""
    data: dict[str, Any] = json.loads((results_dir / "metrics.json").read_text())
    metrics: dict[str, Any] = data.get("metrics", {})
    return metrics
