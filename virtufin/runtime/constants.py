"""Constants of the worker runtime: MIME types, the native ABI version, limits and defaults."""

from __future__ import annotations

from typing import Final

MIME_PYTHON_CLASS: Final = "application/x-python-class"
MIME_PYTHON_SCRIPT: Final = "text/x-python"
MIME_NATIVE: Final = "application/x-native-dll"
MIME_TYPES: Final = (MIME_PYTHON_CLASS, MIME_PYTHON_SCRIPT, MIME_NATIVE)

ABI_VERSION: Final = 1
"""The one native ABI version this host speaks (``VirtufinHost.abi_version``)."""
HOST_STRUCT_SIZE_64: Final = 40
"""``sizeof(VirtufinHost)`` on 64-bit platforms."""

LOG_TRACE: Final = 0
LOG_DEBUG: Final = 1
LOG_INFO: Final = 2
LOG_WARN: Final = 3
LOG_ERROR: Final = 4

MAX_TAGS: Final = 50
MAX_ENV_VARS: Final = 100
MAX_KEY_CHARS: Final = 128
MAX_VALUE_CHARS: Final = 1024

DEFAULT_EVENT_TIMEOUT_SECS: Final = 30.0
DEFAULT_PING_INTERVAL_SECS: Final = 10.0
DEFAULT_START_TIMEOUT_SECS: Final = 10.0
DEFAULT_MAX_ATTEMPTS: Final = 2
DEFAULT_MAX_RESTARTS: Final = 5
DEFAULT_RESTART_WINDOW_SECS: Final = 60.0
DEFAULT_RESTART_BACKOFF_SECS: Final = 0.05
DEFAULT_MAX_BACKOFF_SECS: Final = 5.0
DEFAULT_BLOCKED_MODULES: Final = (
    "socket",
    "ssl",
    "subprocess",
    "ctypes",
    "cffi",
    "multiprocessing",
    "pty",
)
"""Modules a ``text/x-python`` child refuses to import (``_socket`` and friends included)."""

WORKER_SOURCE_PREFIX: Final = "urn:com.virtufin.worker."
WORKMANAGER_SERVICE: Final = "workmanager"
