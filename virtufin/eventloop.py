"""The event loop long-running processes run on: uvloop when it is installed, else asyncio's.

uvloop (libuv) does the same work as asyncio's selector loop with less interpreter time per
wake-up, socket write and callback: every bus hop of a service pays those a few times, so the
live path (a bar, a worker, an order, a fill: three broker hops) gets faster and cheaper.
Services and ``virtufin up`` use it; tests and library code keep whatever loop they run on.
``VIRTUFIN_EVENT_LOOP=asyncio`` forces the standard loop (for comparison or debugging).

Example:
    >>> from virtufin.eventloop import run
    >>> run(some_coroutine())                                           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "run"]

_T = TypeVar("_T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None for asyncio's default (not installed, or
    ``VIRTUFIN_EVENT_LOOP=asyncio``)."""
    if os.environ.get("VIRTUFIN_EVENT_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """`asyncio.run` on the loop of `loop_factory`."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
