"""Deterministic order ids: the same input event always yields the same ids.

An order id is ``<worker id>-<20 hex digits>``, the digits the start of the SHA-256 of the JSON
array ``[worker id, input source, input id, ordinal]``; the ordinal counts the ids drawn while
handling that one input (0, 1, …). So:

- a redelivered input (after a crash, a restart or a retry) yields the ids it yielded before,
  and the venue, which de-duplicates by order id, fills each order once;
- a new input never reuses an id, however often the worker restarted (no counter to reset);
- a backtest rerun with the same run id (its bar ids are ``<run id>-bar-<n>``) is identical.

Workers call `WorkerContext.order_id`; an ``order.submitted`` emitted with no ``order_id``
(scripts, native workers) gets one from the host (`virtufin.runtime.routing.Stamper`).

Example:
    >>> order_id("sma", "urn:com.virtufin.marketdata", "bar-1")
    'sma-961ccb0e5fbc4b374f32'
"""

from __future__ import annotations

import hashlib
import json
from typing import Final

__all__ = ["ORDER_ID_DIGITS", "order_id"]

ORDER_ID_DIGITS: Final = 20
"""Hex digits of the digest kept in an order id (80 bits)."""


def order_id(worker_id: str, source: str, event_id: str, ordinal: int = 0) -> str:
    """The id of the `ordinal`-th order a worker makes on the input (`source`, `event_id`)."""
    material = json.dumps([worker_id, source, event_id, ordinal], separators=(",", ":"))
    digest = hashlib.sha256(material.encode("utf-8")).hexdigest()
    return f"{worker_id}-{digest[:ORDER_ID_DIGITS]}"
