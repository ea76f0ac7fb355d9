"""`create_state`: each setting gives the right, working adapter; no client is imported early."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import redis.exceptions

from virtufin.config import Settings
from virtufin.errors import ConfigError
from virtufin.state.factory import create_state
from virtufin.state.memory import MemoryStateStore
from virtufin.state.port import StateStore
from virtufin.state.postgres import PostgresStateStore
from virtufin.state.redis import RedisStateStore
from virtufin.state.sqlite import SqliteStateStore

ROOT = Path(__file__).resolve().parents[3]


async def _round_trip(store: StateStore) -> None:
    key = f"vtest.factory.{uuid.uuid4().hex}"  # shared default table/namespace: own key only
    try:
        etag = await store.save(key, {"ok": True})
        item = await store.get(key)
        assert item is not None
        assert (item.value, item.etag) == ({"ok": True}, etag)
        assert await store.keys(key) == [key]
    finally:
        await store.delete(key)
        await store.close()


async def test_memory(tmp_path: Path) -> None:
    store = await create_state(Settings(state="memory", state_dir=tmp_path))
    assert isinstance(store, MemoryStateStore)
    await _round_trip(store)


async def test_sqlite_is_the_default_and_lives_in_the_state_dir(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    assert settings.state == "sqlite"
    store = await create_state(settings)
    assert isinstance(store, SqliteStateStore)
    await _round_trip(store)
    assert (tmp_path / "state" / "state.sqlite3").is_file()


@pytest.mark.postgres
async def test_postgres(postgres_dsn: str, tmp_path: Path) -> None:
    store = await create_state(
        Settings(state="postgres", postgres_dsn=postgres_dsn, state_dir=tmp_path)
    )
    assert isinstance(store, PostgresStateStore)
    await _round_trip(store)


@pytest.mark.redis
async def test_redis(redis_url: str, tmp_path: Path) -> None:
    store = await create_state(Settings(state="redis", redis_url=redis_url, state_dir=tmp_path))
    assert isinstance(store, RedisStateStore)
    await _round_trip(store)


async def test_an_unreachable_postgres_fails_at_creation(tmp_path: Path) -> None:
    settings = Settings(
        state="postgres", postgres_dsn="postgresql://postgres@127.0.0.1:1/x", state_dir=tmp_path
    )
    with pytest.raises(psycopg.OperationalError):
        await create_state(settings)


async def test_an_unreachable_redis_fails_at_creation(tmp_path: Path) -> None:
    settings = Settings(state="redis", redis_url="redis://127.0.0.1:1/0", state_dir=tmp_path)
    with pytest.raises(redis.exceptions.ConnectionError):
        await create_state(settings)


async def test_dapr_without_its_adapter_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "virtufin.state.dapr", None)  # makes the import fail
    with pytest.raises(ConfigError, match="dapr") as caught:
        await create_state(Settings(state="dapr", state_dir=tmp_path))
    assert caught.value.field == "state"


def test_core_modules_import_no_database_client() -> None:
    code = (
        "import sys, virtufin.state, virtufin.state.factory, virtufin.state.observed,"
        " virtufin.state.sqlite, virtufin.scenarios\n"
        "print(sorted(m for m in ('psycopg', 'redis') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
