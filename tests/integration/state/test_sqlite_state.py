"""SQLite adapter beyond the contract: restarts, several processes, a locked database."""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from virtufin.errors import StateError
from virtufin.state.sqlite import SqliteStateStore

ROOT = Path(__file__).resolve().parents[3]

# A process that waits until every peer is ready, then does `n` etag-checked increments.
_RACER = """
import asyncio, sys
from virtufin.errors import ConcurrencyError
from virtufin.state.sqlite import SqliteStateStore

async def main(path: str, me: str, peers: int, n: int) -> None:
    store = SqliteStateStore(path, busy_timeout_s=20)
    await store.save(f"ready.{me}", True)
    while len(await store.keys("ready.")) < peers:
        await asyncio.sleep(0.01)
    done = conflicts = 0
    while done < n:
        item = await store.get("counter")
        await asyncio.sleep(0.001)  # widen the window between read and write
        try:
            await store.save("counter", item.value + 1, etag=item.etag)
            done += 1
        except ConcurrencyError:
            conflicts += 1
    await store.close()
    print(conflicts)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


async def test_state_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    first = SqliteStateStore(path)
    etag = await first.save("scenario.S1", {"status": "active"})
    await first.save("gone", 1)
    await first.delete("gone")
    await first.close()

    async with SqliteStateStore(path) as second:
        item = await second.get("scenario.S1")
        assert item is not None
        assert (item.value, item.etag) == ({"status": "active"}, etag)
        assert await second.keys() == ["scenario.S1"]
        await second.save("scenario.S1", {"status": "paused"}, etag=etag)


async def test_missing_folders_are_created_and_the_journal_is_wal(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.sqlite3"
    async with SqliteStateStore(path) as store:
        await store.save("k", 1)
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_processes_racing_on_one_file_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    async with SqliteStateStore(path) as store:
        await store.save("counter", 0)
    peers, increments = 3, 40
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _RACER,
            str(path),
            str(me),
            str(peers),
            str(increments),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for me in range(peers)
    ]
    results = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
    conflicts = sum(int(out) for out, _ in results)
    async with SqliteStateStore(path) as store:
        final = await store.get("counter")
    assert final is not None
    assert final.value == peers * increments
    assert conflicts > 0  # the processes really raced


async def test_a_locked_database_is_awaited_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SqliteStateStore(path)
    await store.save("k", 1)
    blocker = sqlite3.connect(path, isolation_level=None)  # another process, in effect
    blocker.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    ticking = asyncio.create_task(ticker())
    try:
        save = asyncio.create_task(store.save("k", 2))
        await asyncio.sleep(0.2)
        assert not save.done()
        read = await asyncio.wait_for(store.get("k"), 1)  # WAL: readers never wait for writers
        assert read is not None
        assert read.value == 1
        blocker.execute("COMMIT")
        await asyncio.wait_for(save, 2)
    finally:
        ticking.cancel()
        blocker.close()
        await store.close()
    assert ticks >= 10  # the loop kept running while the save waited
    async with SqliteStateStore(path) as again:
        item = await again.get("k")
    assert item is not None
    assert item.value == 2


async def test_a_lock_held_too_long_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    async with SqliteStateStore(path, busy_timeout_s=0.1) as store:
        await store.save("k", 1)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StateError, match="locked"):
                await store.save("k", 2)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        item = await store.get("k")
        assert item is not None
        assert item.value == 1


@pytest.mark.parametrize("value", [{1, 2}, math.nan, object(), {"x": math.inf}])
async def test_a_value_that_is_not_json_is_refused(tmp_path: Path, value: Any) -> None:
    async with SqliteStateStore(tmp_path / "state.sqlite3") as store:
        with pytest.raises(StateError, match="not JSON"):
            await store.save("k", value)
        assert await store.get("k") is None


async def test_prefixes_ending_in_the_last_code_point_are_exact(tmp_path: Path) -> None:
    top = "\U0010ffff"
    async with SqliteStateStore(tmp_path / "state.sqlite3") as store:
        for key in (f"a{top}", f"a{top}b", f"a{top}{top}", "b"):
            await store.save(key, 1)
        assert await store.keys(f"a{top}") == [f"a{top}", f"a{top}b", f"a{top}{top}"]
        assert await store.keys(top) == []


async def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.sqlite3")
    await store.save("k", 1)
    await store.close()
    with pytest.raises(StateError, match="closed"):
        await store.get("k")


async def test_extended_busy_codes_are_waited_out_like_plain_busy(tmp_path: Path) -> None:
    """A replica opening the file while another recovers its WAL gets SQLITE_BUSY_RECOVERY
    (an extended code, 261); it must back off and retry, not fail its start-up."""
    store = SqliteStateStore(str(tmp_path / "state.sqlite3"))
    attempts = []

    def flaky(conn: sqlite3.Connection) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = 261  # SQLITE_BUSY_RECOVERY
            raise error
        return "done"

    assert await store._run("k", flaky) == "done"
    assert len(attempts) == 3

    def broken(conn: sqlite3.Connection) -> str:
        error = sqlite3.OperationalError("disk I/O error")
        error.sqlite_errorcode = 10  # SQLITE_IOERR: not a lock, raised at once
        raise error

    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        await store._run("k", broken)
    await store.close()
