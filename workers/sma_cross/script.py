"""The SMA crossover as a ``text/x-python`` script (Virtufin's ``def Process(event)`` shape).

Runs sandboxed in a child process; reads its id and parameters from the environment the host
sets. Same decisions as ``worker.py`` and ``native/src/sma_cross.c``.
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

BAR_PREFIX = "com.virtufin.exchange."
BAR_SUFFIX = ".ohlcv.candle"
closes: deque[float] = deque(maxlen=SLOW)
previous: tuple[float, float] | None = None
orders = 0


def sma(window: int) -> float:
    total = 0.0
    for value in islice(closes, len(closes) - window, None):
        total += value
    return total / window


def Process(event: dict[str, Any]) -> dict[str, Any] | None:
    global previous, orders
    kind = event["type"]
    if not (kind.startswith(BAR_PREFIX) and kind.endswith(BAR_SUFFIX)):
        return None
    if len(kind) <= len(BAR_PREFIX) + len(BAR_SUFFIX):
        return None
    data = event["data"]
    closes.append(float(data["close"]))
    if len(closes) < SLOW:
        return None
    fast, slow = sma(FAST), sma(SLOW)
    before, previous = previous, (fast, slow)
    if before is None:
        return None
    if before[0] < before[1] and fast > slow:
        side, words = "buy", "above"
    elif before[1] < before[0] and slow > fast:
        side, words = "sell", "below"
    else:
        return None
    orders += 1
    order_id = f"{WORKER_ID}-{orders}"
    return {
        "type": "com.virtufin.trading.order.submitted",
        "source": f"urn:com.virtufin.worker.{WORKER_ID}",
        "subject": f"order/{order_id}",
        "data": {
            "order_id": order_id,
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
