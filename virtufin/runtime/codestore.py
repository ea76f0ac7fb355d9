"""Worker code versions: where hot-reloaded code is written and how each version is recorded.

Every worker has a history of `CodeVersion` (version, loaded_at, sha256, entry_point). New code
arrives as bytes and is written to ``<code_dir>/<worker id>/v<N>/`` (``code.py`` for scripts,
``lib<id>.so`` for native libraries, ``<module>.py`` for classes, entry ``<file>:<Class>``);
without bytes the current entry point is re-read (a class module is re-imported).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from virtufin.errors import WorkerLoadError
from virtufin.runtime.constants import MIME_NATIVE, MIME_PYTHON_CLASS, MIME_PYTHON_SCRIPT
from virtufin.runtime.manifest import WorkerManifest

__all__ = ["CodeVersion", "code_digest", "stage_code"]


class CodeVersion(BaseModel):
    """One loaded version of a worker's code."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int
    loaded_at: datetime
    sha256: str
    entry_point: str


def _class_source(entry_point: str) -> Path | None:
    where = entry_point.rpartition(":")[0]
    if where.endswith(".py"):
        return Path(where)
    try:
        spec = importlib.util.find_spec(where)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None


def code_digest(manifest: WorkerManifest) -> str:
    """sha256 of the code a manifest points at (of the entry string if there is no file)."""
    if manifest.mime_type == MIME_PYTHON_CLASS:
        path = _class_source(manifest.entry_point) if ":" in manifest.entry_point else None
    else:
        path = Path(manifest.entry_point)
    if path is not None and path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return hashlib.sha256(manifest.entry_point.encode()).hexdigest()


def stage_code(
    manifest: WorkerManifest,
    *,
    code: bytes | None,
    entry_point: str | None,
    code_dir: Path,
    version: int,
) -> WorkerManifest:
    """The manifest of the next version: new bytes written out, or the entry re-read.

    Raises:
        WorkerLoadError: a class worker's module cannot be re-imported.
    """
    entry = entry_point or manifest.entry_point
    if code is None:
        if manifest.mime_type == MIME_PYTHON_CLASS and ":" in entry:
            module = entry.rpartition(":")[0]
            if not module.endswith(".py") and module in sys.modules:
                try:
                    importlib.reload(sys.modules[module])
                except Exception as exc:
                    raise WorkerLoadError(
                        manifest.id, f"re-importing {module} raised {type(exc).__name__}: {exc}"
                    ) from None
        return manifest.model_copy(update={"entry_point": entry})
    folder = code_dir / manifest.id / f"v{version}"
    folder.mkdir(parents=True, exist_ok=True)
    if manifest.mime_type == MIME_PYTHON_SCRIPT:
        target = folder / "code.py"
        new_entry = str(target)
    elif manifest.mime_type == MIME_NATIVE:
        target = folder / f"lib{manifest.id}.so"
        new_entry = str(target)
    else:
        where, _, cls_name = entry.rpartition(":")
        stem = Path(where).stem if where.endswith(".py") else where.rpartition(".")[2]
        target = folder / f"{stem or 'worker'}.py"
        new_entry = f"{target}:{cls_name}"
    target.write_bytes(code)
    if manifest.mime_type == MIME_NATIVE:
        os.chmod(target, 0o755)
    return manifest.model_copy(update={"entry_point": new_entry})
