"""The cffi binding of Virtufin's native worker ABI (version 1): one `NativeLibrary` per loaded
worker instance, with the optional batch extension (``OnBatch``: an Arrow record batch in
through the Arrow C data interface, decisions out as columns).

Imports only cffi, the standard library and `virtufin.errors`, because the safe-mode child
(`virtufin/runtime/child.py`) loads it too. The C side is ``native/include/virtufin_worker.h``;
docs/spec/native-abi.md is the contract.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from virtufin.errors import GatewayCallError, WorkerLoadError

__all__ = [
    "ABI_VERSION",
    "BATCH_VERSION",
    "CDEF",
    "GATEWAY_UNAVAILABLE",
    "BatchOrders",
    "NativeCallError",
    "NativeLibrary",
    "ffi",
]

ABI_VERSION: Final = 1
BATCH_VERSION: Final = 1
"""The revision of the batch extension this host speaks (``VirtufinBatchSink.version``)."""
GATEWAY_UNAVAILABLE: Final = -1
"""``gateway_call``'s answer when the host has no gateway (``VIRTUFIN_E_UNAVAILABLE``)."""
_INTERNAL: Final = 13  # gRPC INTERNAL: the host failed in an unexpected way
CDEF: Final = """
typedef struct VirtufinHost {
    void* engine_ptr;
    int32_t abi_version;
    void (*log)(void* engine_ptr, int32_t level, const char* message);
    int32_t (*gateway_call)(void* engine_ptr, const char* service, const char* method,
                            const uint8_t* request, int32_t request_len,
                            uint8_t** response, int32_t* response_len);
    void (*free_response)(uint8_t* response);
} VirtufinHost;
int32_t VirtufinAbiVersion(void);
int32_t Process(const VirtufinHost* host, const char* in, int32_t in_len,
                char** out, int32_t* out_len);
void FreeResult(char* out);
int32_t Configure(const VirtufinHost* host, const char* json, int32_t json_len);
void Destroy(const VirtufinHost* host);
struct ArrowSchema {
    const char* format;
    const char* name;
    const char* metadata;
    int64_t flags;
    int64_t n_children;
    struct ArrowSchema** children;
    struct ArrowSchema* dictionary;
    void (*release)(struct ArrowSchema*);
    void* private_data;
};
struct ArrowArray {
    int64_t length;
    int64_t null_count;
    int64_t offset;
    int64_t n_buffers;
    int64_t n_children;
    const void** buffers;
    struct ArrowArray** children;
    struct ArrowArray* dictionary;
    void (*release)(struct ArrowArray*);
    void* private_data;
};
typedef struct VirtufinOrderColumns {
    int64_t length;
    const int64_t* rows;
    const int8_t* sides;
    const double* limit_prices;
    const char* options;
} VirtufinOrderColumns;
typedef struct VirtufinBatchSink {
    void* sink_ptr;
    int32_t version;
    int32_t (*orders)(void* sink_ptr, const VirtufinOrderColumns* orders);
    int32_t (*emit)(void* sink_ptr, const uint8_t* json, int32_t json_len);
} VirtufinBatchSink;
int32_t OnBatch(const VirtufinHost* host, struct ArrowSchema* schema, struct ArrowArray* batch,
                const VirtufinBatchSink* sink);
"""
_E_INPUT: Final = 1  # VIRTUFIN_E_INPUT: what the batch sink answers to unusable columns
_ORDER_OPTIONS: Final[dict[str, type | tuple[type, ...]]] = {
    "qty": (int, float, type(None)),
    "sizing": str,
    "exclusive": bool,
    "reason": str,
}
_LEVELS: Final = {0: 5, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_log = logging.getLogger(__name__)


def _make_ffi() -> Any:
    import cffi

    made = cffi.FFI()
    made.cdef(CDEF)
    return made


ffi: Any = _make_ffi()
_instances: dict[int, NativeLibrary] = {}
_responses: dict[int, Any] = {}
_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class BatchOrders:
    """One group of orders an ``OnBatch`` handed to ``sink->orders``, copied out of the library.

    `rows` holds `length` native-endian int64, `sides` `length` int8 (+1 buy, -1 sell),
    `limit_prices` `length` float64 or None (market orders); `options` is the group's
    ``options`` JSON object (``qty``, ``sizing``, ``exclusive``, ``reason``).
    """

    length: int
    rows: bytes
    sides: bytes
    limit_prices: bytes | None
    options: dict[str, Any]


class NativeCallError(Exception):
    """`Process` returned non-zero or an unusable output."""

    def __init__(self, rc: int, reason: str) -> None:
        self.rc = rc
        self.reason = reason
        super().__init__(reason)


def _instance(engine_ptr: Any) -> NativeLibrary | None:
    return _instances.get(int(ffi.cast("uintptr_t", engine_ptr)))


@ffi.callback("void(void*, int32_t, const char*)")  # type: ignore[untyped-decorator]
def _log_callback(engine_ptr: Any, level: int, message: Any) -> None:
    text = ffi.string(message).decode("utf-8", "replace") if message != ffi.NULL else ""
    lib = _instance(engine_ptr)
    if lib is not None:
        lib.log(int(level), text)


def _hand_out(answer: bytes, response: Any, response_len: Any) -> None:
    """Give the library a host-owned copy of `answer` (released by ``free_response``)."""
    buf = ffi.new("uint8_t[]", max(len(answer), 1))
    ffi.memmove(buf, answer, len(answer))
    with _lock:
        _responses[int(ffi.cast("uintptr_t", buf))] = buf
    response[0] = buf
    response_len[0] = len(answer)


def _error_body(code: int, status: str, message: str) -> bytes:
    return json.dumps({"code": code, "status": status, "message": message}).encode("utf-8")


@ffi.callback(  # type: ignore[untyped-decorator]
    "int32_t(void*, const char*, const char*, const uint8_t*, int32_t, uint8_t**, int32_t*)",
    onerror=lambda *_: GATEWAY_UNAVAILABLE,
)
def _gateway_callback(
    engine_ptr: Any,
    service: Any,
    method: Any,
    request: Any,
    request_len: int,
    response: Any,
    response_len: Any,
) -> int:
    lib = _instance(engine_ptr)
    if lib is None or response == ffi.NULL or response_len == ffi.NULL:
        return GATEWAY_UNAVAILABLE
    response[0] = ffi.NULL
    response_len[0] = 0
    payload = ffi.unpack(ffi.cast("char*", request), request_len) if request != ffi.NULL else b""
    name = "?.?"
    try:
        service_name = ffi.string(service).decode("utf-8") if service != ffi.NULL else ""
        method_name = ffi.string(method).decode("utf-8") if method != ffi.NULL else ""
        name = f"{service_name}.{method_name}"
        answer = lib.gateway_call(service_name, method_name, payload)
    except NotImplementedError:
        return GATEWAY_UNAVAILABLE
    except GatewayCallError as exc:
        code = exc.code if exc.code > 0 else 2  # 2: gRPC UNKNOWN
        _log.info("[%s] gateway_call %s failed: %s", lib.worker_id, name, exc)
        _hand_out(_error_body(code, exc.status, exc.message), response, response_len)
        return code
    except Exception as exc:
        _log.warning("[%s] gateway_call %s failed", lib.worker_id, name, exc_info=True)
        message = f"the host failed: {type(exc).__name__}: {exc}"
        _hand_out(_error_body(_INTERNAL, "INTERNAL", message), response, response_len)
        return _INTERNAL
    _hand_out(answer, response, response_len)
    return 0


@ffi.callback("void(uint8_t*)")  # type: ignore[untyped-decorator]
def _free_response_callback(response: Any) -> None:
    with _lock:
        _responses.pop(int(ffi.cast("uintptr_t", response)), None)


@ffi.callback(  # type: ignore[untyped-decorator]
    "int32_t(void*, const VirtufinOrderColumns*)", onerror=lambda *_: _E_INPUT
)
def _orders_callback(sink_ptr: Any, columns: Any) -> int:
    lib = _instance(sink_ptr)
    if lib is None:
        return _E_INPUT
    try:
        return lib._take_orders(columns)
    except Exception as exc:  # the library only sees a code: keep the reason for the error
        return lib._refuse(f"the host failed: {type(exc).__name__}: {exc}")


@ffi.callback(  # type: ignore[untyped-decorator]
    "int32_t(void*, const uint8_t*, int32_t)", onerror=lambda *_: _E_INPUT
)
def _emit_callback(sink_ptr: Any, payload: Any, size: int) -> int:
    lib = _instance(sink_ptr)
    if lib is None:
        return _E_INPUT
    try:
        return lib._take_emit(payload, size)
    except Exception as exc:
        return lib._refuse(f"the host failed: {type(exc).__name__}: {exc}")


class NativeLibrary:
    """One loaded native worker instance: checks the ABI, then calls into the library.

    Symbols the library exports:

    | symbol             | required | notes                                                |
    |--------------------|----------|------------------------------------------------------|
    | VirtufinAbiVersion | yes      | must return 1; checked before any other call         |
    | Process            | yes      | JSON CloudEvent in; nothing, an object or an array out |
    | FreeResult         | yes      | called exactly once per non-null output              |
    | Configure          | no       | this project's extension: parameters, once, first    |
    | Destroy            | no       | this project's extension: free per-instance state    |
    | OnBatch            | no       | batch extension: an Arrow record batch, zero-copy    |

    Host hooks (override in a subclass):

    | method        | required | notes                                                   |
    |---------------|----------|---------------------------------------------------------|
    | log           | no       | default: Python logging; remembers the last error line  |
    | gateway_call  | no       | default raises NotImplementedError: the library gets -1 |
    |               |          | `GatewayCallError` → its gRPC code and an error object  |

    Raises:
        WorkerLoadError: missing file, ``dlopen`` failure, missing required symbol or a
            different ABI version.
    """

    def __init__(self, path: str | Path, *, worker_id: str = "") -> None:
        self.path = Path(path)
        self.worker_id = worker_id
        self.last_error: str | None = None
        if not self.path.is_file():
            raise WorkerLoadError(worker_id, f"{self.path}: no such library")
        try:
            self._lib = ffi.dlopen(str(self.path))
        except OSError as exc:
            raise WorkerLoadError(worker_id, f"cannot load {self.path}: {exc}") from None
        try:
            self._bind()
        except WorkerLoadError:
            ffi.dlclose(self._lib)
            raise
        self._handle = ffi.new("char[1]")
        self._key = int(ffi.cast("uintptr_t", self._handle))
        host = ffi.new("VirtufinHost*")
        host.engine_ptr = self._handle
        host.abi_version = ABI_VERSION
        host.log = _log_callback
        host.gateway_call = _gateway_callback
        host.free_response = _free_response_callback
        self.host = host
        self._out = ffi.new("char**")
        self._out_len = ffi.new("int32_t*")
        sink = ffi.new("VirtufinBatchSink*")
        sink.sink_ptr = self._handle
        sink.version = BATCH_VERSION
        sink.orders = _orders_callback
        sink.emit = _emit_callback
        self._sink = sink
        self._batch: list[BatchOrders | bytes] | None = None
        self._batch_error: str | None = None
        self.unreleased = 0
        """Batches (or schemas) the library left unreleased, which the host released itself."""
        self._closed = False
        _instances[self._key] = self

    def _symbol(self, name: str, *, required: bool) -> Any:
        try:
            return getattr(self._lib, name)
        except AttributeError:
            if required:
                raise WorkerLoadError(
                    self.worker_id,
                    f"{self.path.name} does not export {name} (required by native ABI "
                    f"{ABI_VERSION})",
                ) from None
            return None

    def _bind(self) -> None:
        version = self._symbol("VirtufinAbiVersion", required=True)()
        if version != ABI_VERSION:
            raise WorkerLoadError(
                self.worker_id,
                f"{self.path.name} is built for native ABI version {version}; "
                f"this host speaks version {ABI_VERSION}",
            )
        self._process = self._symbol("Process", required=True)
        self._free = self._symbol("FreeResult", required=True)
        self._configure = self._symbol("Configure", required=False)
        self._destroy = self._symbol("Destroy", required=False)
        self._on_batch = self._symbol("OnBatch", required=False)

    # ------------------------------------------------------------------ hooks

    def log(self, level: int, message: str) -> None:
        """A log line from the library (levels 0 trace … 4 error)."""
        if level >= 4:
            self.last_error = message
        _log.log(_LEVELS.get(level, logging.INFO), "[%s] %s", self.worker_id, message)

    def gateway_call(self, service: str, method: str, request: bytes) -> bytes:
        """Answer the library's ``gateway_call`` (JSON request and response bytes).

        Raises:
            NotImplementedError: no gateway here (the library gets ``VIRTUFIN_E_UNAVAILABLE``).
            GatewayCallError: the call failed; the library gets `code` and
                ``{"code", "status", "message"}`` as the response.
        """
        raise NotImplementedError("NativeLibrary.gateway_call")

    # ------------------------------------------------------------------ calls

    @property
    def has_configure(self) -> bool:
        return self._configure is not None

    def configure(self, config_json: bytes) -> None:
        """Call ``Configure`` once (no-op when the library does not export it).

        Raises:
            WorkerLoadError: Configure returned non-zero (with the library's last error log).
        """
        if self._configure is None:
            return
        rc = self._configure(self.host, config_json, len(config_json))
        if rc != 0:
            detail = f": {self.last_error}" if self.last_error else ""
            raise WorkerLoadError(self.worker_id, f"Configure returned {rc}{detail}")

    def process(self, event_json: bytes) -> bytes | None:
        """Call ``Process``; return its output bytes (None for no output).

        Raises:
            NativeCallError: non-zero return code or a negative output length.
        """
        out = self._out
        out_len = self._out_len
        out[0] = ffi.NULL
        out_len[0] = 0
        rc = self._process(self.host, event_json, len(event_json), out, out_len)
        ptr = out[0]
        result = None
        if ptr != ffi.NULL:
            size = out_len[0]
            try:
                if size < 0:
                    raise NativeCallError(rc, f"Process returned a negative length {size}")
                result = ffi.unpack(ptr, size)
            finally:
                self._free(ptr)
        if rc != 0:
            detail = f": {self.last_error}" if self.last_error else ""
            raise NativeCallError(rc, f"Process returned {rc}{detail}")
        return result or None

    @property
    def has_on_batch(self) -> bool:
        """Whether the library exports ``OnBatch`` (the batch extension)."""
        return self._on_batch is not None

    def on_batch(self, export: Callable[[int, int], None]) -> list[BatchOrders | bytes]:
        """Call ``OnBatch`` with one record batch; return what it handed to the sink, in order:
        `BatchOrders` (``sink->orders``) and JSON bytes (``sink->emit``).

        `export(array_address, schema_address)` fills the host's ``struct ArrowArray`` and
        ``struct ArrowSchema`` (pyarrow: ``record_batch._export_to_c``); the library reads the
        buffers in place and releases both. Whatever it left unreleased (and did not move) is
        released here, counted in `unreleased`, and logged.

        Raises:
            NativeCallError: no ``OnBatch``, a non-zero return code, or columns the sink
                refused.
        """
        if self._on_batch is None:
            raise NativeCallError(-1, f"{self.path.name} does not export OnBatch")
        schema = ffi.new("struct ArrowSchema*")
        array = ffi.new("struct ArrowArray*")
        export(int(ffi.cast("uintptr_t", array)), int(ffi.cast("uintptr_t", schema)))
        self._batch, self._batch_error = [], None
        try:
            rc = self._on_batch(self.host, schema, array, self._sink)
        finally:
            items, refused = self._batch, self._batch_error
            self._batch = None
            self._release_leftovers(schema, array)
        if rc != 0:
            detail = refused or self.last_error
            raise NativeCallError(rc, f"OnBatch returned {rc}" + (f": {detail}" if detail else ""))
        if refused is not None:
            raise NativeCallError(_E_INPUT, f"OnBatch ignored a refusal: {refused}")
        return items

    def _release_leftovers(self, schema: Any, array: Any) -> None:
        left = []
        if array.release != ffi.NULL:
            array.release(array)
            left.append("batch")
        if schema.release != ffi.NULL:
            schema.release(schema)
            left.append("schema")
        if left:
            self.unreleased += 1
            if self.unreleased == 1:
                _log.warning(
                    "[%s] %s left the %s unreleased after OnBatch; the host released it",
                    self.worker_id,
                    self.path.name,
                    " and ".join(left),
                )

    def _refuse(self, reason: str) -> int:
        if self._batch_error is None:
            self._batch_error = reason
            _log.warning("[%s] OnBatch: %s", self.worker_id, reason)
        return _E_INPUT

    def _take_orders(self, columns: Any) -> int:
        if self._batch is None:
            return self._refuse("sink->orders called outside OnBatch")
        n = int(columns.length)
        if n < 0:
            return self._refuse(f"orders with a negative length {n}")
        if n and (columns.rows == ffi.NULL or columns.sides == ffi.NULL):
            return self._refuse("orders need rows and sides")
        options: Any = {}
        if columns.options != ffi.NULL:
            text = ffi.string(columns.options)
            try:
                options = json.loads(text)
            except ValueError as exc:
                return self._refuse(f"order options are not JSON ({exc})")
            if not isinstance(options, dict):
                return self._refuse(f"order options must be a JSON object, not {text[:60]!r}")
            for key, value in options.items():
                kinds = _ORDER_OPTIONS.get(key)
                if kinds is None:
                    return self._refuse(f"unknown order option {key!r}")
                if not isinstance(value, kinds) or (key == "qty" and isinstance(value, bool)):
                    return self._refuse(f"order option {key!r} has the wrong type: {value!r}")
        if not n:
            return 0
        limits = columns.limit_prices
        self._batch.append(
            BatchOrders(
                length=n,
                rows=ffi.buffer(columns.rows, 8 * n)[:],
                sides=ffi.buffer(columns.sides, n)[:],
                limit_prices=None if limits == ffi.NULL else ffi.buffer(limits, 8 * n)[:],
                options=options,
            )
        )
        return 0

    def _take_emit(self, payload: Any, size: int) -> int:
        if self._batch is None:
            return self._refuse("sink->emit called outside OnBatch")
        if size < 0 or (size and payload == ffi.NULL):
            return self._refuse(f"emit of {size} bytes at NULL or a negative length")
        if size:
            self._batch.append(ffi.unpack(ffi.cast("char*", payload), size))
        return 0

    def close(self) -> None:
        """Call ``Destroy`` (if exported), forget the instance, ``dlclose`` (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._destroy is not None:
                self._destroy(self.host)
        finally:
            _instances.pop(self._key, None)
            ffi.dlclose(self._lib)
