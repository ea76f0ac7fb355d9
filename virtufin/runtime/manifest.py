"""The worker manifest (``manifest.json``): what a worker is, how to load it, what it consumes.

Example ``manifest.json`` (paths are relative to the manifest's folder)::

    {"id": "sma_cross", "mime_type": "text/x-python", "entry_point": "script.py",
     "topics": ["hyp.*.exchange.binance.ohlcv.candle.1d.BTCUSDT"], "group": "sma",
     "params_schema": {"type": "object", "properties": {"fast": {"type": "integer"}}},
     "params": {"fast": 10}}

`resolve_target` turns what a user types (a manifest, a script, a library, ``module:Class``)
into a manifest; docs/spec/worker-protocol.md lists every field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from virtufin.errors import TopicError, WorkerLoadError
from virtufin.lanes import parse, validate_pattern
from virtufin.runtime.constants import (
    ABI_VERSION,
    DEFAULT_BLOCKED_MODULES,
    DEFAULT_EVENT_TIMEOUT_SECS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF_SECS,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_PING_INTERVAL_SECS,
    DEFAULT_RESTART_BACKOFF_SECS,
    DEFAULT_RESTART_WINDOW_SECS,
    DEFAULT_START_TIMEOUT_SECS,
    MIME_NATIVE,
    MIME_PYTHON_CLASS,
    MIME_PYTHON_SCRIPT,
)
from workers.kit.params import check_schema

__all__ = [
    "ID_PATTERN",
    "EngineOptions",
    "Isolation",
    "MimeType",
    "WorkerManifest",
    "resolve_target",
]

ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
MimeType = Literal["application/x-python-class", "text/x-python", "application/x-native-dll"]
Isolation = Literal["in_process", "process"]
_DEFAULT_ISOLATION: Final[dict[str, Isolation]] = {
    MIME_PYTHON_CLASS: "in_process",
    MIME_PYTHON_SCRIPT: "process",
    MIME_NATIVE: "in_process",
}
_SUPPORTED: Final = {
    (MIME_PYTHON_CLASS, "in_process"),
    (MIME_PYTHON_SCRIPT, "process"),
    (MIME_NATIVE, "in_process"),
    (MIME_NATIVE, "process"),
}


class EngineOptions(BaseModel):
    """Knobs of the out-of-process engines (``text/x-python`` and native safe mode).

    Usage: ``EngineOptions(event_timeout_secs=5, ping_interval_secs=2)``; ``0`` for
    `ping_interval_secs` turns pinging off.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_timeout_secs: float = Field(default=DEFAULT_EVENT_TIMEOUT_SECS, gt=0)
    ping_interval_secs: float = Field(default=DEFAULT_PING_INTERVAL_SECS, ge=0)
    ping_timeout_secs: float = Field(default=5.0, gt=0)
    start_timeout_secs: float = Field(default=DEFAULT_START_TIMEOUT_SECS, gt=0)
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=10)
    max_restarts: int = Field(default=DEFAULT_MAX_RESTARTS, ge=0)
    restart_window_secs: float = Field(default=DEFAULT_RESTART_WINDOW_SECS, gt=0)
    restart_backoff_secs: float = Field(default=DEFAULT_RESTART_BACKOFF_SECS, ge=0)
    max_backoff_secs: float = Field(default=DEFAULT_MAX_BACKOFF_SECS, ge=0)
    blocked_modules: tuple[str, ...] = DEFAULT_BLOCKED_MODULES
    python_executable: str | None = None
    """Interpreter for children (default: the host's own, ``sys.executable``)."""


class WorkerManifest(BaseModel):
    """A worker's manifest; build it with `load`, `from_dict` or the constructor."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    mime_type: MimeType
    entry_point: str = Field(min_length=1)
    """``module:Class``, ``file.py:Class`` or an entry point name (``virtufin.workers`` group)
    for classes; the script file for ``text/x-python``; the ``.so`` for native workers."""
    version: str = "0.1.0"
    description: str = ""
    topics: tuple[str, ...] = ()
    group: str | None = None
    output_topic: str | None = None
    params_schema: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    isolation: Isolation | None = None
    abi_version: int | None = None
    options: EngineOptions = EngineOptions()
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("topics")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                validate_pattern(pattern)
            except TopicError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("output_topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse(value)
            except TopicError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("params_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            check_schema(value)
        except WorkerLoadError as exc:
            raise ValueError(exc.reason) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WorkerManifest:
        if (self.mime_type, self.resolved_isolation) not in _SUPPORTED:
            raise ValueError(f"{self.mime_type} cannot run with isolation {self.isolation}")
        if self.abi_version is not None and self.abi_version != ABI_VERSION:
            raise ValueError(
                f"abi_version {self.abi_version} is not supported (this host speaks {ABI_VERSION})"
            )
        return self

    @property
    def resolved_isolation(self) -> Isolation:
        """`isolation`, or the MIME type's default (only scripts run out of process)."""
        return self.isolation or _DEFAULT_ISOLATION[self.mime_type]

    @classmethod
    def from_dict(cls, obj: dict[str, Any], *, base_dir: Path | None = None) -> WorkerManifest:
        """Validate `obj`; resolve file entry points against `base_dir`.

        Raises:
            WorkerLoadError: listing every invalid field.
        """
        try:
            manifest = cls.model_validate(obj)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'manifest'}: {err['msg']}"
                for err in exc.errors()
            )
            worker_id = str(obj.get("id", "?")) if isinstance(obj, dict) else "?"
            raise WorkerLoadError(worker_id, f"invalid manifest: {problems}") from None
        if base_dir is not None:
            manifest = manifest.model_copy(
                update={"entry_point": _resolve_entry(manifest, base_dir)}
            )
        return manifest

    @classmethod
    def load(cls, path: str | Path) -> WorkerManifest:
        """Read and validate a ``manifest.json``.

        Raises:
            WorkerLoadError: unreadable, not JSON, or invalid.
        """
        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise WorkerLoadError(str(path), f"cannot read manifest: {exc}") from None
        if not isinstance(obj, dict):
            raise WorkerLoadError(str(path), "a manifest is a JSON object")
        return cls.from_dict(obj, base_dir=path.resolve().parent)


def _resolve_entry(manifest: WorkerManifest, base_dir: Path) -> str:
    entry = manifest.entry_point
    if manifest.mime_type in (MIME_PYTHON_SCRIPT, MIME_NATIVE):
        return str((base_dir / entry).resolve())
    file_part, sep, cls_name = entry.rpartition(":")
    if sep and file_part.endswith(".py"):
        return f"{(base_dir / file_part).resolve()}:{cls_name}"
    return entry


def _safe_id(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", text).strip("._-") or "worker"
    return cleaned[:128]


def _sibling_manifest(path: Path, *, any_manifest: bool) -> WorkerManifest | None:
    candidates = [path.with_name(f"{path.stem}.manifest.json")]
    if any_manifest:
        candidates.append(path.with_name("manifest.json"))
    for candidate in candidates:
        if candidate.is_file():
            manifest = WorkerManifest.load(candidate)
            if Path(manifest.entry_point) == path.resolve():
                return manifest
    return None


def resolve_target(target: str, *, mime: str | None = None) -> WorkerManifest:
    """The manifest for a CLI target: a manifest, ``code.py``, ``lib.so`` or ``module:Class``.

    A script or library with a ``<stem>.manifest.json`` beside it (for libraries also a
    ``manifest.json`` naming it) gets that manifest; otherwise defaults, with the id taken from
    the file name.

    Raises:
        WorkerLoadError: the file is missing, the manifest is invalid, or `mime` does not fit.
    """
    if target.endswith(".json"):
        manifest = WorkerManifest.load(target)
        if mime is not None and mime != manifest.mime_type:
            manifest = WorkerManifest.from_dict(
                {**manifest.model_dump(exclude_defaults=True), "mime_type": mime}
            )
        return manifest
    path = Path(target)
    is_library = path.suffix == ".so" or ".so." in path.name
    if path.suffix == ".py" or is_library:
        if not path.is_file():
            raise WorkerLoadError(_safe_id(path.stem), f"{target}: no such file")
        found = _sibling_manifest(path, any_manifest=is_library)
        kind = mime or (found.mime_type if found else None)
        kind = kind or (MIME_NATIVE if is_library else MIME_PYTHON_SCRIPT)
        if found is not None and found.mime_type == kind:
            return found
        if kind == MIME_PYTHON_CLASS:
            raise WorkerLoadError(
                _safe_id(path.stem), f"{MIME_PYTHON_CLASS} needs <file.py>:<Class> or module:Class"
            )
        name = path.stem.removeprefix("lib") if is_library else path.stem
        return WorkerManifest.from_dict(
            {"id": _safe_id(name), "mime_type": kind, "entry_point": str(path.resolve())}
        )
    kind = mime or MIME_PYTHON_CLASS
    name = target.rpartition(":")[2] or target
    return WorkerManifest.from_dict(
        {"id": _safe_id(name.lower()), "mime_type": kind, "entry_point": target}
    )
