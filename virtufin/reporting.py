"""The main job's HTML report: one standalone file (plots embedded), readable offline.

Example:
    >>> path = write_report(Path(".virtufin/reports"), summary)   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["render_report", "write_report"]

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left}
.ok{color:#1a7f37;font-weight:600} .bad{color:#cf222e;font-weight:600}
figure{margin:1rem 0} figcaption{color:#555;font-size:.85rem}
img{max-width:100%;border:1px solid #eee}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any, digits: int = 2) -> str:
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return _e(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    head = "".join(
        f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _image(path: str | None) -> str:
    if path is None or not Path(path).is_file():
        return "<p>(no plot)</p>"
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="equity and drawdown" src="data:image/png;base64,{data}">'


def render_report(summary: Mapping[str, Any]) -> str:
    """The HTML text of a run summary (the structure `virtufin run --json` prints)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>Virtufin run report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Virtufin run report</h1>",
        f'<p class="sub">{_e(summary.get("finished_at"))} · {_num(summary.get("seconds"), 1)} s'
        f" · bus {_e(summary.get('bus'))} · state {_e(summary.get('state'))}</p>",
    ]
    ingest = summary.get("ingestion", {})
    parts.append("<h2>Market data</h2>")
    parts.append(
        f"<p>{_e(ingest.get('rows'))} bars of {_e(', '.join(summary.get('symbols', [])))} "
        f"from {_e(summary.get('start'))} to {_e(summary.get('end'))} in "
        f"<code>{_e(ingest.get('data_root'))}</code>; quarantined rows: "
        f"{_e(ingest.get('quarantined'))}; failed checks: "
        f"{_e(', '.join(ingest.get('failed_checks', [])) or 'none')}.</p>"
    )
    scenarios = summary.get("scenarios", [])
    parts.append("<h2>Backtests</h2>")
    parts.append(
        _table(
            [
                "scenario",
                "strategy",
                "params",
                "symbol",
                "return %",
                "Sharpe",
                "max DD %",
                "trades",
            ],
            [
                [
                    _e(s["scenario_id"]),
                    _e(s["strategy"]),
                    _e(json.dumps(s["params"])),
                    _e(", ".join(s["symbols"])),
                    _num(s.get("return_pct")),
                    _num(s.get("sharpe")),
                    _num(s.get("max_drawdown_pct")),
                    _e(s.get("trades")),
                ]
                for s in scenarios
            ],
            left=4,
        )
    )
    parts.append("<h2>Promotion</h2>")
    rows = []
    for p in summary.get("promotions", []):
        failed = "; ".join(
            f"{c['name']}: {_num(c.get('actual'), 3)} vs {_num(c.get('threshold'), 3)}"
            for c in p.get("failed_checks", [])
        )
        verdict = (
            '<span class="ok">LIVE</span>'
            if p["reached"] == "LIVE"
            else f'<span class="bad">stopped before {_e(p.get("refused_at"))}</span>'
        )
        rows.append([_e(p["scenario_id"]), verdict, _e(p["reached"]), _e(failed or "—")])
    parts.append(
        _table(["scenario", "decision", "reached", "failed gate (actual vs threshold)"], rows)
    )
    log_rows = [
        [
            _e(e.get("sequence")),
            _e(e.get("scenario")),
            _e(e.get("from")),
            _e(e.get("to")),
            _e(e.get("decision")),
            _e(e.get("at")),
        ]
        for e in summary.get("promotion_log", [])
    ]
    parts.append("<h3>Promotion log</h3>")
    parts.append(_table(["#", "scenario", "from", "to", "decision", "at"], log_rows, left=6))
    live = summary.get("live") or {}
    parts.append("<h2>Live (sc.LIVE)</h2>")
    if live:
        parts.append(
            f"<p>Worker <code>{_e(live.get('worker'))}</code> {_e(json.dumps(live.get('params')))}"
            f" traded {_e(live.get('symbol'))} on the act lanes for "
            f"{_num(live.get('seconds'), 1)} s"
            f": {_e(live.get('bars'))} bars replayed, {_e(live.get('orders'))} orders, "
            f"{_e(live.get('fills'))} fills.</p>"
        )
        parts.append(
            _table(
                ["time", "event", "side", "qty", "price"],
                [
                    [
                        _e(f.get("time")),
                        _e(f.get("event")),
                        _e(f.get("side")),
                        _num(f.get("qty"), 0),
                        _num(f.get("price")),
                    ]
                    for f in live.get("events", [])[:50]
                ],
                left=3,
            )
        )
    else:
        parts.append("<p>No live stage ran.</p>")
    parts.append("<h2>Equity and drawdown</h2>")
    for s in scenarios:
        parts.append(
            f"<figure>{_image(s.get('plot'))}<figcaption>{_e(s['scenario_id'])} — "
            f"{_e(s['strategy'])} {_e(json.dumps(s['params']))} on {_e(', '.join(s['symbols']))}:"
            " equity (top) and drawdown (bottom)</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(folder: Path, summary: Mapping[str, Any]) -> Path:
    """Write ``report-<UTC time>.html`` and ``latest.html`` in `folder`; return the former."""
    folder.mkdir(parents=True, exist_ok=True)
    text = render_report(summary)
    path = folder / f"report-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.html"
    path.write_text(text, encoding="utf-8")
    (folder / "latest.html").write_text(text, encoding="utf-8")
    return path
