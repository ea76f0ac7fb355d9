"""Build the state store a process runs on from its `Settings`.

Adapters are imported here, inside the function, so that importing Virtufin never imports a
database client: only the chosen adapter module pulls in psycopg or redis.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Final

from virtufin.config import Settings
from virtufin.errors import ConfigError
from virtufin.state.port import StateStore

__all__ = ["SQLITE_FILE_NAME", "create_state"]

SQLITE_FILE_NAME: Final = "state.sqlite3"


async def create_state(settings: Settings) -> StateStore:
    """The store named by ``settings.state``, connected, its table or namespace ready.

    ``sqlite`` (the default) lives at ``settings.state_dir / "state.sqlite3"``; ``postgres`` and
    ``redis`` use ``settings.postgres_dsn`` / ``settings.redis_url``; ``dapr`` uses the
    component ``settings.state_store_name``.

    Raises:
        ConfigError: the kind is unknown, or its adapter cannot be loaded.

    Example:
        >>> store = await create_state(load_settings(flags={"state": "memory"}))  # doctest: +SKIP
    """
    kind = settings.state
    if kind == "memory":
        from virtufin.state.memory import MemoryStateStore

        return MemoryStateStore()
    if kind == "sqlite":
        from virtufin.state.sqlite import SqliteStateStore

        return SqliteStateStore(settings.state_dir / SQLITE_FILE_NAME)
    if kind == "postgres":
        from virtufin.state.postgres import PostgresStateStore

        pg = PostgresStateStore(settings.postgres_dsn)
        return await _opened(pg, pg.open)
    if kind == "redis":
        from virtufin.state.redis import RedisStateStore

        rd = RedisStateStore(settings.redis_url)
        return await _opened(rd, rd.open)
    if kind == "dapr":
        return _dapr(settings)
    raise ConfigError("settings", "state", f"unknown state store {kind!r}")


async def _opened(store: StateStore, open_: Callable[[], Awaitable[None]]) -> StateStore:
    """Connect now, so a wrong DSN or URL fails at start-up rather than at the first write."""
    try:
        await open_()
    except BaseException:
        await store.close()
        raise
    return store


def _dapr(settings: Settings) -> StateStore:
    # importlib rather than `from … import`: the module is optional and may not exist yet.
    try:
        module = importlib.import_module("virtufin.state.dapr")
        store_class = module.DaprStateStore
    except (ImportError, AttributeError) as exc:
        raise ConfigError(
            "settings", "state", f"the dapr state store is unavailable ({exc})"
        ) from exc
    store = store_class(store_name=settings.state_store_name)
    if not isinstance(store, StateStore):
        raise ConfigError("settings", "state", "virtufin.state.dapr.DaprStateStore is no store")
    return store
