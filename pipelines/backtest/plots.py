"""The equity-and-drawdown plot of a backtest, as PNG bytes (matplotlib, Agg backend).

Built on `matplotlib.figure.Figure` with the Agg canvas directly (no pyplot state, safe in
threads) and without `tight_layout`, which alone costs more than the rest of the drawing.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["equity_plot_png", "markdown_image"]


def equity_plot_png(equity_parquet: Path, *, title: str) -> bytes:
    """Equity (top) and drawdown in % (bottom) from the engine's ``equity.parquet``."""
    table = pq.read_table(equity_parquet, columns=["ts", "equity", "drawdown_pct"])
    when = table.column("ts").to_numpy().astype("datetime64[us]")
    equity = table.column("equity").to_numpy()
    drawdown = -np.nan_to_num(pc.fill_null(table.column("drawdown_pct"), 0.0).to_numpy())
    fig = Figure(figsize=(9, 5), dpi=80)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot(when, equity, color="#1f77b4", linewidth=1.2)
    top.set_ylabel("equity")
    top.set_title(title, fontsize=10)
    top.grid(alpha=0.3)
    bottom.fill_between(when, drawdown, 0, color="#d62728", alpha=0.4, step="post")
    bottom.set_ylabel("drawdown %")
    bottom.grid(alpha=0.3)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.93, bottom=0.08, hspace=0.08)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def markdown_image(png: bytes, *, alt: str) -> str:
    """A Markdown image with the PNG embedded as a data URI (shown by the Dagster UI)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
