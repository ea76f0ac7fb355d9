"""Where a worker's code comes from: `CodeSource` → `WorkerManifest`.

``code_source.url`` may be

- ``module:Class`` (or ``path/file.py:Class``): a class worker already installed or bundled
  (``workers.echo.worker:EchoWorker``), MIME ``application/x-python-class``;
- a local path (relative to the project root, or ``file://``) to a ``manifest.json``, a
  ``.py`` script or a ``.so`` library, inside one of the allowed code roots
  (``VIRTUFIN_CODE_ROOTS``, default: the project root);
- ``http(s)://…`` on a host listed in ``ALLOWED_CODE_SOURCE_HOSTS`` (Virtufin's SSRF guard;
  empty = no remote code), fetched and treated as content.

``code_source.content`` is the code itself, staged under ``<code_dir>/<id>/<digest>/``:
``code.py`` for ``text/x-python``, ``lib<id>.so`` for ``application/x-native-dll``, a module
for ``application/x-python-class`` (its one worker class is found by name). With
``content_sha256`` set, a mismatch is refused.
"""

from __future__ import annotations

import ast
import hashlib
import os
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc

from services.bootstrap.errors import RpcError
from virtufin.config import project_root
from virtufin.proto import ensure_built
from virtufin.runtime.constants import (
    MIME_NATIVE,
    MIME_PYTHON_CLASS,
    MIME_PYTHON_SCRIPT,
    MIME_TYPES,
)
from virtufin.runtime.manifest import WorkerManifest, resolve_target

ensure_built()
from virtufin.proto.gen import workmanager_pb2  # noqa: E402

__all__ = ["MAX_CODE_BYTES", "CodePolicy", "ResolvedCode", "resolve_code"]

MAX_CODE_BYTES: Final = 16 * 1024 * 1024
_FETCH_TIMEOUT_S: Final = 20.0


@dataclass(frozen=True, slots=True)
class CodePolicy:
    """Where code may come from. Environment: ``VIRTUFIN_CODE_ROOTS`` (``os.pathsep``-separated
    folders, default the project root), ``ALLOWED_CODE_SOURCE_HOSTS`` (comma-separated)."""

    roots: tuple[Path, ...]
    allowed_hosts: frozenset[str]
    code_dir: Path

    @classmethod
    def from_env(cls, code_dir: Path, env: dict[str, str] | None = None) -> CodePolicy:
        env = dict(os.environ) if env is None else env
        raw_roots = env.get("VIRTUFIN_CODE_ROOTS") or str(project_root())
        roots = tuple(Path(r).resolve() for r in raw_roots.split(os.pathsep) if r)
        hosts = frozenset(
            h.strip().lower()
            for h in env.get("ALLOWED_CODE_SOURCE_HOSTS", "").split(",")
            if h.strip()
        )
        return cls(roots=roots, allowed_hosts=hosts, code_dir=code_dir)


@dataclass(frozen=True, slots=True)
class ResolvedCode:
    """A manifest ready for the supervisor, and what the history records about it."""

    manifest: WorkerManifest
    sha256: str
    url: str


def _invalid(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _check_digest(content: bytes, expected: str) -> str:
    digest = hashlib.sha256(content).hexdigest()
    if expected and expected.lower() != digest:
        raise _invalid(f"content_sha256 {expected} does not match the code ({digest})")
    return digest


def _worker_class(source: bytes) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise _invalid(f"the worker module does not parse: {exc}") from None
    classes = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    workers = [
        c.name
        for c in classes
        if any(
            (isinstance(b, ast.Name) and b.id.endswith("Worker"))
            or (isinstance(b, ast.Attribute) and b.attr.endswith("Worker"))
            or (isinstance(b, ast.Subscript) and "Worker" in ast.unparse(b.value))
            for b in c.bases
        )
    ]
    candidates = workers or [c.name for c in classes]
    if len(candidates) != 1:
        raise _invalid(
            "a class worker module must define exactly one worker class "
            f"(found: {', '.join(candidates) or 'none'})"
        )
    return candidates[0]


def _stage(worker_id: str, mime: str, content: bytes, digest: str, code_dir: Path) -> str:
    folder = code_dir / worker_id / digest[:16]
    folder.mkdir(parents=True, exist_ok=True)
    if mime == MIME_PYTHON_SCRIPT:
        target = folder / "code.py"
        entry = str(target)
    elif mime == MIME_NATIVE:
        target = folder / f"lib{worker_id}.so"
        entry = str(target)
    else:
        cls_name = _worker_class(content)
        target = folder / f"worker_{digest[:12]}.py"
        entry = f"{target}:{cls_name}"
    if not target.exists() or target.read_bytes() != content:
        target.write_bytes(content)
        if mime == MIME_NATIVE:
            target.chmod(0o755)
    return entry


def _fetch(url: str, policy: CodePolicy) -> bytes:
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if host not in policy.allowed_hosts:
        raise RpcError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"code host {host!r} is not in ALLOWED_CODE_SOURCE_HOSTS",
        )
    try:
        with urllib.request.urlopen(url, timeout=_FETCH_TIMEOUT_S) as reply:
            content: bytes = reply.read(MAX_CODE_BYTES + 1)
    except OSError as exc:
        raise RpcError(grpc.StatusCode.UNAVAILABLE, f"cannot fetch {url}: {exc}") from None
    if len(content) > MAX_CODE_BYTES:
        raise _invalid(f"{url} is larger than {MAX_CODE_BYTES} bytes")
    return content


def _local_path(url: str, roots: Sequence[Path]) -> Path:
    raw = urllib.parse.urlsplit(url).path if url.startswith("file://") else url
    path = Path(raw)
    if not path.is_absolute():
        path = project_root() / path
    path = path.resolve()
    if not any(path == root or root in path.parents for root in roots):
        raise RpcError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{path} is outside the allowed code roots (VIRTUFIN_CODE_ROOTS)",
        )
    if not path.is_file():
        raise _invalid(f"{url}: no such file")
    return path


def resolve_code(
    worker_id: str,
    source: workmanager_pb2.CodeSource,
    mime_type: str,
    policy: CodePolicy,
) -> ResolvedCode:
    """The manifest for `source` (id set to `worker_id`; `mime_type` empty = from the source).

    Raises:
        RpcError: INVALID_ARGUMENT (no code, bad MIME type, digest mismatch, unparsable module),
            PERMISSION_DENIED (host or path not allowed), UNAVAILABLE (fetch failed).
        WorkerLoadError: the manifest or file is unusable.
    """
    if mime_type and mime_type not in MIME_TYPES:
        raise _invalid(f"mime_type {mime_type!r} is not one of {', '.join(MIME_TYPES)}")
    which = source.WhichOneof("source")
    url = source.url.strip() if which == "url" else ""
    if which is None or (which == "url" and not url):
        raise _invalid("code_source needs a url or content")
    content: bytes | None = bytes(source.content) if which == "content" else None
    if url.startswith(("http://", "https://")):
        content = _fetch(url, policy)
    if content is not None:
        if not mime_type:
            raise _invalid("mime_type is required with inline or fetched code")
        if len(content) > MAX_CODE_BYTES:
            raise _invalid(f"code is larger than {MAX_CODE_BYTES} bytes")
        digest = _check_digest(content, source.content_sha256)
        entry = _stage(worker_id, mime_type, content, digest, policy.code_dir)
        manifest = WorkerManifest.from_dict(
            {"id": worker_id, "mime_type": mime_type, "entry_point": entry}
        )
        return ResolvedCode(manifest, digest, url)
    where, sep, cls_name = url.rpartition(":")
    is_class = (
        not url.startswith("file://")
        and bool(sep)
        and cls_name.isidentifier()
        and not url.endswith((".json", ".py", ".so"))
    )
    if is_class:
        if mime_type and mime_type != MIME_PYTHON_CLASS:
            raise _invalid(f"module:Class entry points are {MIME_PYTHON_CLASS} ({mime_type} given)")
        if where.endswith(".py"):
            path = _local_path(where, policy.roots)
            digest = _check_digest(path.read_bytes(), source.content_sha256)
            entry = f"{path}:{cls_name}"
        else:
            digest = hashlib.sha256(url.encode()).hexdigest()
            entry = url
        manifest = resolve_target(entry, mime=MIME_PYTHON_CLASS)
    else:
        path = _local_path(url, policy.roots)
        digest = _check_digest(path.read_bytes(), source.content_sha256)
        manifest = resolve_target(str(path), mime=mime_type or None)
    manifest = manifest.model_copy(update={"id": worker_id})
    return ResolvedCode(manifest, digest, url)
