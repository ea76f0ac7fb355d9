"""Native engines (``application/x-native-dll``): in process through cffi, or in a child.

In process (`NativeEngine`) is the fast path: the event's JSON goes straight into ``Process``
and a crash takes the host down with it. Safe mode (`NativeSafeEngine`, manifest
``"isolation": "process"``) loads the same library in a child speaking the out-of-process
frames, so a segfault only kills the child, which is restarted like a crashed Python child.

Both call ``Configure`` once before the first event with
``{"worker_id": …, "params": {…}, "env": {…}}`` when the library exports it.

A library exporting ``OnBatch`` (the batch extension, docs/spec/native-abi.md) also takes whole
Arrow record batches in process: `NativeEngine.on_batch` exports the batch through the Arrow C
data interface (no copy: the library reads pyarrow's buffers) and returns the library's
decisions as numpy columns (`OrderColumns`). The backtest's ``mode="batch"`` uses it.

``gateway_call`` goes to the binding's gateway (the WorkManager binds a
`virtufin.client.GatewayBridge`). A gateway call blocks until the backend answers, and the
backend may be the very service hosting the worker, so an in-process engine with a gateway is
`blocking`: async hosts run its events in a worker thread (one at a time), never on their event
loop. In safe mode the child rebuilds the bridge from the environment and calls the gateway
itself.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import virtufin
from virtufin.envelope import Envelope
from virtufin.errors import WorkerError, WorkerEventError, WorkerLoadError
from virtufin.runtime.constants import MIME_NATIVE
from virtufin.runtime.engine import Engine
from virtufin.runtime.manifest import WorkerManifest
from virtufin.runtime.native_lib import BatchOrders, NativeCallError, NativeLibrary
from virtufin.runtime.process import ProcessEngine
from virtufin.runtime.routing import Binding
from virtufin.runtime.wire import dumps, event_json
from workers.kit.clock import Clock
from workers.kit.context import Emission
from workers.kit.script import emissions_from_output

__all__ = ["PROJECT_ROOT", "NativeEngine", "NativeSafeEngine", "OrderColumns", "native_config"]

PROJECT_ROOT: Final = Path(virtufin.__file__).resolve().parent.parent
"""The folder holding the ``virtufin`` package (put on the safe-mode child's path)."""


def native_config(worker_id: str, params: Mapping[str, Any], env: Mapping[str, str]) -> bytes:
    """The JSON handed to ``Configure``."""
    return dumps({"worker_id": worker_id, "params": dict(params), "env": dict(env)})


class _HostLibrary(NativeLibrary):
    """A `NativeLibrary` whose ``gateway_call`` goes to the binding's gateway."""

    def __init__(self, path: str, *, worker_id: str, binding: Binding) -> None:
        self.binding = binding
        super().__init__(path, worker_id=worker_id)

    def gateway_call(self, service: str, method: str, request: bytes) -> bytes:
        if self.binding.gateway is None:
            raise NotImplementedError("NativeLibrary.gateway_call")
        return self.binding.gateway(service, method, request)


def _output_emissions(worker_id: str, raw: bytes | None, event: Envelope) -> list[Emission]:
    if raw is None:
        return []
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise WorkerEventError(
            worker_id, f"Process output is not JSON ({exc})", event=event
        ) from None
    try:
        return emissions_from_output(parsed)
    except ValueError as exc:
        raise WorkerEventError(worker_id, f"worker returned garbage: {exc}", event=event) from None


@dataclass(frozen=True, slots=True, eq=False)
class OrderColumns:
    """A group of orders an ``OnBatch`` decided, as numpy columns (copies; the library's
    buffers are gone): `rows` int64 rows of the batch, `sides` int8 (+1 buy, -1 sell),
    `limit_prices` float64 (None: market orders), and the group's `options` (``qty``,
    ``sizing``, ``exclusive``, ``reason``). Each order is for the symbol of its row."""

    rows: Any
    sides: Any
    limit_prices: Any
    options: Mapping[str, Any]

    def __len__(self) -> int:
        return len(self.rows)


def _batch_items(
    worker_id: str, items: list[BatchOrders | bytes], n: int
) -> list[OrderColumns | Emission]:
    """The library's decisions on a batch of `n` rows, checked, as numpy columns/emissions."""
    import numpy as np

    out: list[OrderColumns | Emission] = []
    for item in items:
        if isinstance(item, BatchOrders):
            rows = np.frombuffer(item.rows, dtype=np.int64)
            sides = np.frombuffer(item.sides, dtype=np.int8)
            if not (int(rows.min()) >= 0 and int(rows.max()) < n):
                raise WorkerError(
                    worker_id, f"OnBatch ordered on rows outside the batch (0..{n - 1})"
                )
            if not ((sides == 1) | (sides == -1)).all():
                raise WorkerError(worker_id, "OnBatch order sides must be +1 (buy) or -1 (sell)")
            limits = item.limit_prices
            out.append(
                OrderColumns(
                    rows=rows,
                    sides=sides,
                    limit_prices=None if limits is None else np.frombuffer(limits, np.float64),
                    options=item.options,
                )
            )
            continue
        try:
            out.extend(emissions_from_output(json.loads(item)))
        except ValueError as exc:
            raise WorkerError(worker_id, f"OnBatch emitted garbage: {exc}") from None
    return out


class NativeEngine(Engine):
    """A native worker library loaded in this process."""

    mime_type = MIME_NATIVE
    isolation = "in_process"

    def __init__(
        self,
        manifest: WorkerManifest,
        *,
        params: Mapping[str, Any] | None = None,
        binding: Binding | None = None,
    ) -> None:
        super().__init__(manifest, params=params, binding=binding)
        self.blocking = self.binding.gateway is not None
        self._lock = threading.Lock()  # one call into the instance at a time, on any thread

    def _load(self) -> None:
        lib = _HostLibrary(
            self.manifest.entry_point, worker_id=self.worker_id, binding=self.binding
        )
        try:
            lib.configure(native_config(self.worker_id, self.params, self.binding.env))
        except BaseException:
            lib.close()
            raise
        self.lib = lib
        self._call = lib.process

    def _run(self, event: Envelope, clock: Clock) -> Sequence[Emission]:
        try:
            with self._lock:
                raw = self._call(event_json(event))
        except NativeCallError as exc:
            raise WorkerEventError(self.worker_id, exc.reason, event=event) from None
        if raw is None:
            return ()
        return _output_emissions(self.worker_id, raw, event)

    @property
    def has_on_batch(self) -> bool:
        """Whether the loaded library exports ``OnBatch`` (takes whole record batches)."""
        lib = getattr(self, "lib", None)
        return lib is not None and lib.has_on_batch

    def on_batch(self, record: Any) -> list[OrderColumns | Emission]:
        """Hand one pyarrow ``RecordBatch`` to the library's ``OnBatch``, zero-copy; return its
        decisions in the order it made them (`OrderColumns`, and `Emission`s it emitted as
        JSON, whose orders carry ``data.row``).

        Raises:
            WorkerError: the engine is not ready, the library has no ``OnBatch``, it failed
                the batch, or it handed over unusable columns or JSON.
        """
        self._check_ready()
        try:
            with self._lock:
                items = self.lib.on_batch(record._export_to_c)
        except NativeCallError as exc:
            self.last_error = exc.reason
            raise WorkerError(self.worker_id, exc.reason) from None
        return _batch_items(self.worker_id, items, record.num_rows)

    def _stop(self) -> None:
        lib = getattr(self, "lib", None)
        if lib is not None:
            with self._lock:
                lib.close()


class NativeSafeEngine(ProcessEngine):
    """A native worker library in a child process (safe mode)."""

    mime_type = MIME_NATIVE

    def _precheck(self) -> None:
        if not Path(self.manifest.entry_point).is_file():
            raise WorkerLoadError(self.worker_id, f"{self.manifest.entry_point}: no such library")

    def _child_args(self) -> list[str]:
        return ["--native", self.manifest.entry_point, "--root", str(PROJECT_ROOT)]

    def _child_env(self) -> dict[str, str]:
        config = native_config(self.worker_id, self.params, self.binding.env)
        env = {"VIRTUFIN_NATIVE_CONFIG": config.decode("utf-8")}
        child_env = getattr(self.binding.gateway, "child_env", None)
        if callable(child_env):  # a GatewayBridge: the child calls the gateway itself
            env.update(child_env())
        return env
