"""Correlation ids and W3C ``traceparent``, carried per request in contextvars.

The request interceptor sets both from the caller's metadata (``x-correlation-id``,
``traceparent``) or makes fresh ones; handlers read them to stamp the envelopes they publish
(`Envelope.traceparent`, `Envelope.correlationid`) and `outgoing_metadata` forwards them to
backends, so that one OpenTelemetry trace follows a request through the gateway, the bus and
the workers.
"""

from __future__ import annotations

import contextvars
import random
import re
from typing import Final

__all__ = [
    "CORRELATION_HEADER",
    "TRACEPARENT_HEADER",
    "adopt_context",
    "child_traceparent",
    "correlation_id",
    "new_traceparent",
    "outgoing_metadata",
    "parse_traceparent",
    "set_request_context",
    "traceparent",
]

CORRELATION_HEADER: Final = "x-correlation-id"
TRACEPARENT_HEADER: Final = "traceparent"
_TRACEPARENT_RE: Final = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
# Ids are random, not secret: like OpenTelemetry's own id generator, take them from `random`
# (no system call per request). `random` is re-seeded in a forked child.
_bits = random.getrandbits

_correlation: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "virtufin_correlation_id", default=None
)
_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "virtufin_traceparent", default=None
)


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """``(trace_id, parent_id, flags)`` of a valid version-00 header, else None."""
    if value is None:
        return None
    match = _TRACEPARENT_RE.match(value.strip().lower())
    if match is None or match.group(1) == "ff":
        return None
    trace_id, parent_id, flags = match.group(2), match.group(3), match.group(4)
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, flags


def new_traceparent() -> str:
    """A new trace: random trace id and span id, sampled flag set."""
    return f"00-{_bits(128) or 1:032x}-{_bits(64) or 1:016x}-01"


def child_traceparent(parent: str | None) -> str:
    """This hop's span in the caller's trace (same trace id and flags), or a new trace."""
    parsed = parse_traceparent(parent)
    if parsed is None:
        return new_traceparent()
    trace_id, _, flags = parsed
    return f"00-{trace_id}-{_bits(64) or 1:016x}-{flags}"


def set_request_context(
    correlation: str | None, trace: str | None
) -> tuple[contextvars.Token[str | None], contextvars.Token[str | None]]:
    """Set this request's ids (a fresh correlation id when none came) and return reset tokens."""
    return (
        _correlation.set(correlation or f"{_bits(128):032x}"),
        _traceparent.set(child_traceparent(trace)),
    )


def adopt_context(correlation: str | None, trace: str | None) -> None:
    """Take an event's ids as the current context as they are (no new ids: hot path)."""
    _correlation.set(correlation)
    _traceparent.set(trace)


def correlation_id() -> str | None:
    """The current request's correlation id (None outside a request)."""
    return _correlation.get()


def traceparent() -> str | None:
    """The current request's ``traceparent`` (None outside a request)."""
    return _traceparent.get()


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """Metadata that carries the current ids to the next service."""
    out: list[tuple[str, str]] = []
    cid, trace = _correlation.get(), _traceparent.get()
    if cid is not None:
        out.append((CORRELATION_HEADER, cid))
    if trace is not None:
        out.append((TRACEPARENT_HEADER, trace))
    return tuple(out)
