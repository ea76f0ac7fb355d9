"""Signal handling: the first SIGTERM/SIGINT asks for a graceful stop, a second exits at once.

The graceful path (`ServiceContext.run`): health NOT_SERVING → ``server.stop(grace)`` (new
calls refused, running calls get `grace` seconds) → the service's shutdown hooks and adapters
close (bus drained and acked, state closed). An operator who cannot wait sends the signal again
and the process leaves immediately with status 128 + signal number, like grpclib's
``graceful_exit``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Final

__all__ = ["STOP_SIGNALS", "GracefulExit"]

STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
log = logging.getLogger(__name__)


class GracefulExit:
    """Turn stop signals into `stopping` (first) and an immediate exit (second).

    Example:
        >>> with GracefulExit(stopping):           # doctest: +SKIP
        ...     await stopping.wait()
    """

    def __init__(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping
        self._installed: list[signal.Signals] = []

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stopping.is_set():
            log.warning("second %s: exiting now", sig.name)
            sys.stderr.flush()
            os._exit(128 + int(sig))
        log.info("%s received: shutting down gracefully (send it again to exit now)", sig.name)
        self._stopping.set()

    def __enter__(self) -> GracefulExit:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread (tests running a service in-process)
            self._installed.append(sig)
        return self

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()
