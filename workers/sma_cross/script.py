"""The SMA crossover as a ``text/x-python`` script (Virtufin's ``def Process(event)`` shape).

Runs sandboxed in a child process; reads its id and parameters from the environment the host
sets. Same decisions as ``worker.py`` and ``native/src/sma_cross.c``. Its orders carry
``order_id: null``: the host fills in the id derived from the bar (the one ``worker.py`` gets
from ``ctx.order_id()``) and the subject ``order/<id>``, so a redelivered bar re-emits the same
order and a restarted child never reuses an id. ``Snapshot``/``Restore`` make it stateful: a
restarted child (or WorkManager) resumes with its windows instead of starting cold. Each
symbol has its own window, as in ``worker.py`` and the C twin.
"""

import json
import os
from collections import deque
from itertools import islice
from typing import Any

WORKER_ID = os.environ.get("VIRTUFIN_WORKER_ID", "sma_cross")
PARAMS = json.loads(os.environ.get("VIRTUFIN_WORKER_PARAMS") or "{}")
FAST = int(PARAMS.get("fast", 10))
SLOW = int(PARAMS.get("slow", 20))
if not 1 <= FAST < SLOW:
    raise ValueError(f"fast ({FAST}) must be less than slow ({SLOW})")

STATE_VERSION = 2  # 2: one window per symbol
BAR_PREFIX = "com.virtufin.exchange."
BAR_SUFFIX = ".ohlcv.candle"


class Window:
    """One symbol's last `SLOW` closes and its previous bar's two averages."""

    def __init__(self) -> None:
        self.closes: deque[float] = deque(maxlen=SLOW)
        self.previous: tuple[float, float] | None = None

    def sma(self, window: int) -> float:
        total = 0.0
        for value in islice(self.closes, len(self.closes) - window, None):
            total += value
        return total / window


windows: dict[str, Window] = {}


def Snapshot() -> dict[str, Any]:
    return {
        "symbols": {
            symbol: {
                "closes": list(w.closes),
                "previous": None if w.previous is None else list(w.previous),
            }
            for symbol, w in windows.items()
        }
    }


def Restore(state: dict[str, Any]) -> None:
    windows.clear()
    for symbol, saved in state["symbols"].items():
        window = windows[symbol] = Window()
        window.closes.extend(float(c) for c in saved["closes"])
        previous = saved["previous"]
        window.previous = None if previous is None else (float(previous[0]), float(previous[1]))


def Process(event: dict[str, Any]) -> dict[str, Any] | None:
    kind = event["type"]
    if not (kind.startswith(BAR_PREFIX) and kind.endswith(BAR_SUFFIX)):
        return None
    if len(kind) <= len(BAR_PREFIX) + len(BAR_SUFFIX):
        return None
    data = event["data"]
    window = windows.get(data["symbol"])
    if window is None:
        window = windows[data["symbol"]] = Window()
    window.closes.append(float(data["close"]))
    if len(window.closes) < SLOW:
        return None
    fast, slow = window.sma(FAST), window.sma(SLOW)
    before, window.previous = window.previous, (fast, slow)
    if before is None:
        return None
    if before[0] < before[1] and fast > slow:
        side, words = "buy", "above"
    elif before[1] < before[0] and slow > fast:
        side, words = "sell", "below"
    else:
        return None
    return {
        "type": "com.virtufin.trading.order.submitted",
        "source": f"urn:com.virtufin.worker.{WORKER_ID}",
        "data": {
            "order_id": None,
            "symbol": data["symbol"],
            "venue": kind[len(BAR_PREFIX) : -len(BAR_SUFFIX)],
            "side": side,
            "type": "market",
            "qty": None,
            "limit_price": None,
            "sizing": "all_in",
            "exclusive": True,
            "reason": f"fast SMA({FAST}) crossed {words} slow SMA({SLOW})",
        },
    }
