"""`SnapshotKeeper`: what is saved when, the watermark, fingerprints, etags and retries."""

from __future__ import annotations

import math

import pytest

from virtufin import statekeys
from virtufin.envelope import Envelope
from virtufin.errors import ConcurrencyError, StateError, WorkerError
from virtufin.state.memory import MemoryStateStore
from workers.kit.snapshots import SNAPSHOT_FORMAT, SnapshotKeeper, fingerprint, input_key

KEY = statekeys.worker_snapshot("w")
PRINT = fingerprint("Thing@1", {"a": 1})


def ev(n: int) -> Envelope:
    return Envelope(id=f"e{n}", source="urn:src", type="t")


def keeper(store: MemoryStateStore, **kwargs) -> SnapshotKeeper:
    return SnapshotKeeper(store, "w", fingerprint=PRINT, **kwargs)


def test_the_key_and_the_fingerprint():
    assert KEY == "workmanager.snapshot.w"
    assert not KEY.startswith(statekeys.worker(""))  # never mistaken for a worker record
    assert fingerprint("Thing@1", {"a": 1}) == PRINT
    assert fingerprint("Thing@2", {"a": 1}) != PRINT
    assert fingerprint("Thing@1", {"a": 2}) != PRINT


async def test_only_changes_are_written_with_the_watermark():
    store = MemoryStateStore()
    kept = keeper(store)
    assert await kept.load() is None
    assert await kept.record(ev(1), {"n": 1})
    assert not await kept.record(ev(2), {"n": 1})  # unchanged: nothing written
    assert await kept.record(ev(3), {"n": 2})
    item = await store.get(KEY)
    assert item is not None
    assert item.value["format"] == SNAPSHOT_FORMAT
    assert item.value["state"] == {"n": 2}
    assert item.value["applied"] == ["urn:src|e1", "urn:src|e3"]
    assert item.value["changes"] == 2
    assert kept.saves == 2
    assert kept.applied(ev(3))
    assert not kept.applied(ev(2))  # it changed nothing: processing it again is harmless


async def test_a_new_keeper_resumes_from_the_stored_snapshot():
    store = MemoryStateStore()
    await keeper(store).record(ev(1), [1.5, 2.25])
    again = keeper(store)
    restored = await again.load()
    assert restored is not None
    assert (restored.state, restored.changes) == ([1.5, 2.25], 1)
    assert again.applied(ev(1))
    assert not await again.record(ev(2), [1.5, 2.25])
    assert await again.record(ev(3), [2.25])  # saved over the loaded etag


async def test_the_watermark_is_bounded():
    store = MemoryStateStore()
    kept = keeper(store, remember=3)
    for n in range(5):
        await kept.record(ev(n), n)
    assert [kept.applied(ev(n)) for n in range(5)] == [False, False, True, True, True]
    item = await store.get(KEY)
    assert item is not None
    assert item.value["applied"] == [input_key(ev(n)) for n in (2, 3, 4)]


async def test_a_snapshot_of_other_code_or_parameters_is_not_restored(caplog):
    store = MemoryStateStore()
    await keeper(store).record(ev(1), {"n": 1})
    other = SnapshotKeeper(store, "w", fingerprint=fingerprint("Thing@2", {"a": 1}))
    assert await other.load() is None
    assert "starts afresh" in caplog.text
    assert not other.applied(ev(1))
    assert await other.record(ev(2), {"m": 1})  # replaces it (the etag was taken)
    item = await store.get(KEY)
    assert item is not None
    assert item.value["state"] == {"m": 1}


async def test_another_writer_is_detected_by_the_etag():
    store = MemoryStateStore()
    mine = keeper(store)
    await mine.load()
    await mine.record(ev(1), 1)
    theirs = keeper(store)
    await theirs.load()
    await theirs.record(ev(2), 2)
    with pytest.raises(ConcurrencyError):
        await mine.record(ev(3), 3)
    first = keeper(MemoryStateStore())
    await first.load()
    await first.store.save(KEY, {"format": 1})  # someone created it after our read
    with pytest.raises(ConcurrencyError):
        await first.record(ev(1), 1)


class Flaky(MemoryStateStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def save(self, key, value, **kwargs):
        if self.failures:
            self.failures -= 1
            raise StateError(key, "unavailable")
        return await super().save(key, value, **kwargs)


async def test_a_failed_save_stays_pending_until_flushed():
    store = Flaky(failures=1)
    kept = keeper(store)
    with pytest.raises(StateError):
        await kept.record(ev(1), 1)
    assert kept.dirty
    assert kept.applied(ev(1))  # in the worker's state, though not stored yet
    await kept.flush()
    assert not kept.dirty
    item = await store.get(KEY)
    assert item is not None
    assert item.value["state"] == 1


async def test_an_unchanged_state_still_flushes_what_is_pending():
    store = Flaky(failures=1)
    kept = keeper(store)
    with pytest.raises(StateError):
        await kept.record(ev(1), 1)
    assert await kept.record(ev(2), 1)
    assert await store.get(KEY) is not None


@pytest.mark.parametrize("state", [{1, 2}, math.nan, object()])
async def test_a_state_that_is_not_json_is_the_workers_fault(state):
    with pytest.raises(WorkerError, match=r"snapshot\(\) is not a JSON value"):
        await keeper(MemoryStateStore()).record(ev(1), state)
