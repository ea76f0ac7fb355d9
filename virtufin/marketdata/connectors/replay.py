"""Replays of the hive Parquet dataset onto the market-data lanes, as bar events.

The dataset is read with the backtest's reader (`virtufin.backtest.data.HiveDataset`:
``<root>/selector=<SEL>/symbol=<SYM>/date=<YYYY-MM-DD>/*.parquet``, symbols merged by time)
and each row becomes the bar event the worker runtime consumes in a backtest
(`virtufin.backtest.replay.BarEnvelopes` has the same payload): topic
``topics.bar(venue, symbol, interval=…)``, type ``com.virtufin.exchange.<venue>.ohlcv.candle``,
data ``symbol, interval, open, high, low, close, volume, candle_open_time, candle_close_time``,
``time`` = ``eventtime`` = the candle's close, ``clocktype=historical``.

Lanes: by default the bars go to the **act** lanes (``act.exchange.<venue>…``), which is what a
marketdata connector may publish on (lane permissions) and what a paper or LIVE rehearsal
listens to; ``lane="hyp"`` sends them to ``hyp.<selector>.exchange.<venue>…`` instead (for a
process with the backtest role).

Pacing: ``speed=1`` keeps the historical spacing of the close times, ``speed=60`` plays a
minute per second, ``speed=0`` publishes as fast as the broker acknowledges. Each bar is
published (and acknowledged) before the next: a replay never runs ahead of the broker and
events keep their order. Ids are ``<replay id>-<n>``: a retried publish is de-duplicated.

Example:
    >>> replay = Replay(root="data", selector="SMALL", publish=bus.publish)  # doctest: +SKIP
    >>> await replay.run()                                                  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

import pyarrow as pa
import pyarrow.compute as pc

from virtufin import topics
from virtufin.backtest.data import HiveDataset, parse_interval
from virtufin.envelope import Envelope, format_time
from virtufin.errors import BusError, ConfigError, PublishRejectedError
from virtufin.lanes import validate_id
from virtufin.topics import EventTypes

__all__ = ["Replay", "ReplayManager", "ReplayStatus"]

log = logging.getLogger(__name__)

Publish = Callable[[str, Envelope], Awaitable[None]]
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SOURCE: Final = topics.source_urn("marketdata")
_BATCH_ROWS: Final = 4096
_RETRY_MAX_S: Final = 5.0


class ReplayStatus(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"


class Replay:
    """One replay of a dataset (see the module docstring).

    Args:
        root: the dataset root (holding ``selector=…``), or a ``selector=<SEL>`` folder.
        selector: the data universe to read (``^[A-Z0-9_]{1,32}$``).
        symbols: restrict to these (default: all of the selector).
        speed: 0 = as fast as possible, else historical time ÷ wall time.
        venue: the venue token of the topics.
        lane: ``act`` (default) or ``hyp`` (``hyp.<selector>``).
        publish: the bus's publish.

    Raises:
        ConfigError: the dataset, the selector, a symbol or the speed is unusable.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        selector: str,
        publish: Publish,
        symbols: Sequence[str] = (),
        speed: float = 0.0,
        venue: str = "replay",
        lane: Literal["act", "hyp"] = "act",
        replay_id: str | None = None,
    ) -> None:
        if not math.isfinite(speed) or speed < 0:
            raise ConfigError("replay", "speed", f"must be 0 (fastest) or above ({speed})")
        path = Path(root)
        if path.name.startswith("selector="):
            named = path.name.partition("=")[2]
            if selector and selector != named:
                reason = f"the folder is {named!r}, not {selector!r}"
                raise ConfigError(str(path), "selector", reason)
            path, selector = path.parent, named
        try:
            validate_id(selector, what="selector")
        except Exception as exc:
            raise ConfigError("replay", "selector", str(exc)) from None
        self.dataset = HiveDataset(path, selector, symbols=list(symbols) or None)
        topics.bar(venue, "X", interval="1d")  # validates the venue token
        self.id = replay_id or uuid.uuid4().hex
        self.root = path
        self.selector = selector
        self.symbols = tuple(self.dataset.symbols)
        self.speed = speed
        self.venue = venue
        self.lane = lane
        self.status = ReplayStatus.RUNNING
        self.events_published = 0
        self.started_at = datetime.now(UTC)
        self.cursor_time: datetime | None = None
        self.last_error = ""
        self._publish = publish
        self._stop = asyncio.Event()
        self._topics: dict[tuple[str, str], str] = {}
        self._type = EventTypes.market(venue, "ohlcv", "candle")
        self._template = Envelope(
            id="template",
            source=_SOURCE,
            type=self._type,
            clocktype="historical",
            marketlane=lane,
            marketselector=selector if lane == "hyp" else None,
            runid=self.id,
        )

    def stop(self) -> None:
        """Ask the replay to stop after the bar being published."""
        self._stop.set()

    def _topic(self, symbol: str, interval: str) -> str:
        key = (symbol, interval)
        topic = self._topics.get(key)
        if topic is None:
            selector = self.selector if self.lane == "hyp" else None
            topic = topics.bar(self.venue, symbol, interval=interval, selector=selector)
            self._topics[key] = topic
        return topic

    async def run(self) -> ReplayStatus:
        """Publish every bar (or until `stop`); returns the final status (never raises)."""
        try:
            await self._replay()
        except asyncio.CancelledError:
            self.status = ReplayStatus.STOPPED
            raise
        except Exception as exc:
            self.status = ReplayStatus.FAILED
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("replay %s failed: %s", self.id, self.last_error)
            return self.status
        self.status = ReplayStatus.STOPPED if self._stop.is_set() else ReplayStatus.FINISHED
        log.info("replay %s %s after %d events", self.id, self.status.value, self.events_published)
        return self.status

    async def _replay(self) -> None:
        batches = self.dataset.batches(_BATCH_ROWS)
        first_ts: int | None = None
        wall_start = time.monotonic()
        while not self._stop.is_set():
            record = await asyncio.to_thread(_next_batch, batches)
            if record is None:
                return
            for ts, envelope, topic in self._rows(record):
                if first_ts is None:
                    first_ts = ts
                if self.speed > 0:
                    due = wall_start + (ts - first_ts) / 1e6 / self.speed
                    pause = due - time.monotonic()
                    if pause > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stop.wait(), pause)
                if self._stop.is_set():
                    return
                await self._publish_acked(topic, envelope)
                self.events_published += 1
                self.cursor_time = envelope.time

    def _rows(self, record: pa.RecordBatch) -> Iterator[tuple[int, Envelope, str]]:
        ts = pc.cast(record.column("ts"), pa.int64()).to_pylist()
        symbols = record.column("symbol").to_pylist()
        intervals = record.column("interval").to_pylist()
        columns = [record.column(n).to_pylist() for n in ("open", "high", "low", "close", "volume")]
        spans: dict[str, int] = {}
        # The bar count when this batch starts: `events_published` grows while the rows are
        # consumed, so adding `row` to it would skip ids and repeat them in the next batch.
        first = self.events_published
        for row, micros in enumerate(ts):
            symbol, interval = str(symbols[row]), str(intervals[row])
            span = spans.get(interval)
            if span is None:
                span = spans[interval] = parse_interval(interval)
            closes = _EPOCH + timedelta(microseconds=micros)
            opens = _EPOCH + timedelta(microseconds=micros - span)
            data: dict[str, Any] = {
                "symbol": symbol,
                "interval": interval,
                "open": columns[0][row],
                "high": columns[1][row],
                "low": columns[2][row],
                "close": columns[3][row],
                "volume": columns[4][row],
                "candle_open_time": format_time(opens),
                "candle_close_time": format_time(closes),
            }
            envelope = self._template.with_changes(
                id=f"{self.id}-{first + row}",
                data=data,
                time=closes,
                eventtime=closes,
                walltime=datetime.now(UTC),
                subject=f"candle/{symbol}",
            )
            yield micros, envelope, self._topic(symbol, interval)

    async def _publish_acked(self, topic: str, envelope: Envelope) -> None:
        attempt = 0
        while True:
            try:
                await self._publish(topic, envelope)
                return
            except PublishRejectedError:
                raise
            except BusError as exc:
                if self._stop.is_set():
                    raise
                delay = min(_RETRY_MAX_S, 0.1 * 2**attempt)
                attempt += 1
                log.warning(
                    "replay %s: publish failed (%s); retrying in %.1fs", self.id, exc.reason, delay
                )
                await asyncio.sleep(delay)


def _next_batch(batches: Iterator[pa.RecordBatch]) -> pa.RecordBatch | None:
    for batch in batches:
        if batch.num_rows:
            return batch
    return None


class ReplayManager:
    """Running and finished replays of one marketdata instance.

    Args:
        publish: the bus's publish.
        venue: venue token of replayed bars.
        lane: ``act`` or ``hyp``.
        keep_finished: how many finished replays `list` still shows.
    """

    def __init__(
        self,
        *,
        publish: Publish,
        venue: str = "replay",
        lane: Literal["act", "hyp"] = "act",
        keep_finished: int = 100,
    ) -> None:
        self._publish = publish
        self.venue = venue
        self.lane = lane
        self._keep = keep_finished
        self._replays: dict[str, Replay] = {}
        self._tasks: dict[str, asyncio.Task[ReplayStatus]] = {}

    def start(
        self, root: str | Path, selector: str, *, symbols: Sequence[str] = (), speed: float = 0.0
    ) -> Replay:
        """Validate and start a replay in the background.

        Raises:
            ConfigError: as `Replay`.
        """
        replay = Replay(
            root=root,
            selector=selector,
            symbols=symbols,
            speed=speed,
            venue=self.venue,
            lane=self.lane,
            publish=self._publish,
        )
        self._replays[replay.id] = replay
        self._tasks[replay.id] = asyncio.create_task(replay.run(), name=f"replay:{replay.id}")
        self._forget_old()
        return replay

    def _forget_old(self) -> None:
        done = [r for r in self._replays.values() if r.status is not ReplayStatus.RUNNING]
        for replay in done[: max(0, len(done) - self._keep)]:
            self._replays.pop(replay.id, None)
            self._tasks.pop(replay.id, None)

    def get(self, replay_id: str) -> Replay | None:
        return self._replays.get(replay_id)

    def list(self) -> list[Replay]:
        return list(self._replays.values())

    async def stop(self, replay_id: str) -> Replay | None:
        """Stop a replay and wait for it to end; None if unknown."""
        replay = self._replays.get(replay_id)
        if replay is None:
            return None
        replay.stop()
        task = self._tasks.get(replay_id)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return replay

    async def wait(self, replay_id: str) -> ReplayStatus:
        """Wait for a replay to end (tests, benchmarks)."""
        return await self._tasks[replay_id]

    async def close(self) -> None:
        for replay_id in list(self._replays):
            await self.stop(replay_id)
