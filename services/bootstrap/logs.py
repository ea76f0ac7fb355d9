"""Structured logs: one JSON object per line on stderr, with the request's correlation ids.

Fields: ``ts`` (RFC 3339 UTC), ``level``, ``service``, ``logger``, ``msg``, ``correlationid``
and ``traceparent`` inside a request, ``exc`` with the traceback, plus anything passed as
``extra={...}``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final

from services.bootstrap.tracing import correlation_id, traceparent

__all__ = ["JsonFormatter", "configure_logging"]

_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Format records as single-line JSON objects.

    Args:
        service: stamped on every line.
    """

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        cid, trace = correlation_id(), traceparent()
        if cid is not None:
            out["correlationid"] = cid
        if trace is not None:
            out["traceparent"] = trace
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(service: str, *, level: str | int = "INFO") -> None:
    """Send the root logger's records to stderr as JSON lines (replacing its handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
