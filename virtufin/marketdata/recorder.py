"""The recorder: subscribes to live bar events and appends them to a bar dataset.

Live OHLCV candles travel on ``act.exchange.<venue>.ohlcv.candle.<interval>.<symbol>``
(`virtufin.topics.bar`); their data carries ``open, high, low, close, volume`` and the close
time (``candle_close_time``, else ``ts``, else the envelope's ``eventtime``/``time``). The
recorder buffers them and, every `flush_rows` bars or on `flush`/`stop`, merges them into
``<root>/selector=<selector>/…`` with `write_partition`, so replays of the same events (bus
redelivery) change nothing. Rows are not validated here: the pipelines' `RecordedSource` reads
this dataset and validates and quarantines like any other source.

Example:
    >>> recorder = BarRecorder(bus, tmp_path / "recorded")       # doctest: +SKIP
    >>> await recorder.start()                                   # doctest: +SKIP
    >>> ... ; await recorder.stop()                              # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

import pyarrow as pa

from virtufin.bus.port import Delivery, EventBus, Subscription
from virtufin.envelope import Envelope, parse_time
from virtufin.errors import TopicError
from virtufin.lanes import Family, parse, validate_id
from virtufin.marketdata.dataset import PartitionWrite, write_partition
from virtufin.marketdata.schema import BAR_SCHEMA, session_date

__all__ = ["LIVE_BARS_PATTERN", "RECORDED_SELECTOR", "BarRecorder", "bar_row"]

log = logging.getLogger(__name__)
LIVE_BARS_PATTERN: Final = "act.exchange.>"
RECORDED_SELECTOR: Final = "RECORDED"
_FIELDS: Final = ("open", "high", "low", "close", "volume")


def _as_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return parse_time(value.replace("+00:00", "Z"), field_name="candle_close_time")
    return None


def bar_row(topic: str, envelope: Envelope) -> dict[str, Any] | None:
    """The dataset row of a live candle event, or None if the event is no OHLCV candle.

    Raises:
        EnvelopeError: a candle whose close time cannot be parsed.
    """
    try:
        parsed = parse(topic)
    except TopicError:
        return None
    path = parsed.path
    if parsed.family is not Family.ACT or len(path) < 6 or path[2:4] != ("ohlcv", "candle"):
        return None
    data = envelope.data if isinstance(envelope.data, dict) else {}
    ts = _as_time(data.get("candle_close_time")) or _as_time(data.get("ts"))
    ts = ts or envelope.eventtime or envelope.time
    if ts is None:
        return None
    row: dict[str, Any] = {
        "ts": ts,
        "symbol": str(data.get("symbol") or path[5]),
        "interval": path[4],
    }
    for name in _FIELDS:
        value = data.get(name)
        row[name] = float(value) if isinstance(value, int | float) else None
    return row


class BarRecorder:
    """Appends live OHLCV candles from a bus to a hive dataset.

    Args:
        bus: where live events arrive.
        root: the dataset root to append to.
        selector: the data universe the recorded bars are filed under.
        pattern: what to subscribe to (default every live market-data topic).
        flush_rows: buffered bars that trigger a write.
        group: competing-consumer group, so replicas do not record twice.
    """

    def __init__(
        self,
        bus: EventBus,
        root: str | os.PathLike[str],
        *,
        selector: str = RECORDED_SELECTOR,
        pattern: str = LIVE_BARS_PATTERN,
        flush_rows: int = 1_000,
        group: str | None = "marketdata-recorder",
    ) -> None:
        self.bus = bus
        self.root = Path(root)
        self.selector = validate_id(selector, what="selector")
        self.pattern = pattern
        self.flush_rows = flush_rows
        self.group = group
        self.recorded = 0
        self.ignored = 0
        self._buffer: list[dict[str, Any]] = []
        self._subscription: Subscription | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Subscribe (idempotent)."""
        if self._subscription is None:
            self._subscription = await self.bus.subscribe(
                self.pattern, self._on_event, group=self.group
            )

    async def _on_event(self, envelope: Envelope, delivery: Delivery) -> None:
        if self.record(delivery.topic, envelope) and len(self._buffer) >= self.flush_rows:
            await self.flush()

    def record(self, topic: str, envelope: Envelope) -> bool:
        """Buffer one event (sync: also usable as a `subscribe_sync` handler's body)."""
        row = bar_row(topic, envelope)
        if row is None:
            self.ignored += 1
            return False
        self._buffer.append(row)
        self.recorded += 1
        return True

    async def flush(self) -> list[PartitionWrite]:
        """Write buffered bars into their partitions (merging; redelivered bars change nothing)."""
        async with self._lock:
            rows, self._buffer = self._buffer, []
            if not rows:
                return []
            return await asyncio.to_thread(self._write, rows)

    def _write(self, rows: list[dict[str, Any]]) -> list[PartitionWrite]:
        groups: dict[tuple[str, date], list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            groups[(row["symbol"], session_date(row["ts"], row["interval"]))].append(row)
        writes = []
        for (symbol, day), members in sorted(groups.items()):
            table = pa.Table.from_pylist(members, schema=BAR_SCHEMA)
            writes.append(write_partition(self.root, self.selector, symbol, day, table))
        log.debug("recorder wrote %d bars into %d partitions", len(rows), len(writes))
        return writes

    async def stop(self) -> list[PartitionWrite]:
        """Unsubscribe, then write what is buffered."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        return await self.flush()
