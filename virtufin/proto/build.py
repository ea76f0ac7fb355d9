"""Generate the Python gRPC stubs from `virtufin/proto/*.proto` into `virtufin/proto/gen/`.

Run as `python -m virtufin.proto.build` (what `make proto` does). The generated folder is
git-ignored and rebuilt from the sources; nothing in it is ever edited by hand or by this script.

Layout trick: protoc derives Python import statements from the path a `.proto` file has below its
`-I` root. The sources are therefore copied to `<tmp>/virtufin/proto/gen/<name>.proto` and compiled
with `-I <tmp>`, so that `import "virtufin/proto/gen/common.proto";` in a source becomes
`from virtufin.proto.gen import common_pb2` in the generated code. The outputs are first written
below a temporary folder and then moved into place file by file (atomic renames), so an importer
never sees a half-written module. grpc_tools' bundled include folder is on `-I` for the well-known
types (`google/protobuf/timestamp.proto`).

The build is skipped when every output exists and is newer than every input (the `.proto` files
and this script) and was produced by the installed grpcio-tools; `--force` rebuilds anyway.

Example:
    $ python -m virtufin.proto.build
    proto: generated 6 modules in virtufin/proto/gen (0.21 s)
    $ python -m virtufin.proto.build
    proto: up to date (6 modules)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "GEN_DIR",
    "PROTO_DIR",
    "ProtoBuildError",
    "build",
    "expected_outputs",
    "is_stale",
    "main",
    "sources",
]

PROTO_DIR: Final = Path(__file__).resolve().parent
GEN_DIR: Final = PROTO_DIR / "gen"
# The folder protoc's generated imports are relative to (it holds the `virtufin` package).
_IMPORT_ROOT: Final = PROTO_DIR.parent.parent
# Where the sources sit below the temporary `-I` root; must mirror `virtufin.proto.gen`.
_GEN_RELATIVE: Final = GEN_DIR.relative_to(_IMPORT_ROOT)
_OUTPUT_SUFFIXES: Final = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
_INIT: Final = "__init__.py"
_LOCK: Final = ".build.lock"
_VERSION_MARKER: Final = "GRPCIO_TOOLS_VERSION = "


class ProtoBuildError(RuntimeError):
    """protoc failed or its toolchain is missing; the message carries protoc's own output."""


def sources() -> list[Path]:
    """The `.proto` sources, sorted by name."""
    return sorted(PROTO_DIR.glob("*.proto"))


def expected_outputs(protos: Sequence[Path] | None = None) -> list[Path]:
    """Every file a complete build leaves in `GEN_DIR` (the package `__init__.py` last)."""
    protos = sources() if protos is None else protos
    files = [GEN_DIR / f"{p.stem}{suffix}" for p in protos for suffix in _OUTPUT_SUFFIXES]
    return [*files, GEN_DIR / _INIT]


def _tools_version() -> str:
    try:
        return importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ProtoBuildError("grpcio-tools is not installed; run `make setup`") from exc


def _generated_files() -> set[Path]:
    """Generated modules currently in `GEN_DIR` (including leftovers of deleted sources)."""
    if not GEN_DIR.is_dir():
        return set()
    return {p for suffix in _OUTPUT_SUFFIXES for p in GEN_DIR.glob(f"*{suffix}")}


def is_stale() -> bool:
    """True when the generated stubs are missing, older than an input, or from another protoc.

    Only stats files (and reads the small `gen/__init__.py`), so it is cheap enough to call on
    every service start.
    """
    protos = sources()
    outputs = expected_outputs(protos)
    try:
        oldest_output = min(p.stat().st_mtime_ns for p in outputs)
    except FileNotFoundError:
        return True
    newest_input = max(p.stat().st_mtime_ns for p in [*protos, Path(__file__).resolve()])
    if oldest_output <= newest_input:
        return True
    if _generated_files() != set(outputs[:-1]):
        return True  # a source was deleted or renamed: its modules must go
    try:
        version = _tools_version()
    except ProtoBuildError:
        return False  # runtime-only install: the existing, complete stubs are all there is
    init_text = (GEN_DIR / _INIT).read_text(encoding="utf-8")
    return f"{_VERSION_MARKER}{version!r}" not in init_text


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise concurrent builds (parallel test workers, services starting together)."""
    GEN_DIR.mkdir(parents=True, exist_ok=True)
    with (GEN_DIR / _LOCK).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _grpc_tools_include() -> Path:
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or not spec.submodule_search_locations:
        raise ProtoBuildError("grpcio-tools is not installed; run `make setup`")
    include = Path(next(iter(spec.submodule_search_locations))) / "_proto"
    if not (include / "google" / "protobuf" / "timestamp.proto").is_file():
        raise ProtoBuildError(f"grpc_tools include folder not found at {include}")
    return include


def _init_text(protos: Sequence[Path], version: str) -> str:
    names = ", ".join(p.name for p in protos)
    return (
        '"""Generated by `python -m virtufin.proto.build`. DO NOT EDIT.\n'
        "\n"
        "This folder is git-ignored; `make proto` rebuilds it from virtufin/proto/*.proto.\n"
        f"Sources: {names}.\n"
        '"""\n'
        "\n"
        f"{_VERSION_MARKER}{version!r}\n"
    )


def _run_protoc(protos: Sequence[Path], tmp: Path) -> Path:
    """Compile `protos` below `tmp`; returns the folder holding the generated modules."""
    include_root = tmp / "include"
    out_root = tmp / "out"
    staged = include_root / _GEN_RELATIVE
    staged.mkdir(parents=True)
    (out_root / _GEN_RELATIVE).mkdir(parents=True)
    for proto in protos:
        shutil.copy2(proto, staged / proto.name)
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{include_root}",
        f"-I{_grpc_tools_include()}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str((_GEN_RELATIVE / p.name).as_posix()) for p in protos),
    ]
    result = subprocess.run(args, cwd=include_root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        # Point error locations at the real sources rather than the temporary copies.
        detail = (result.stderr or result.stdout).replace(f"{staged}/", f"{PROTO_DIR}/")
        detail = detail.replace(f"{_GEN_RELATIVE.as_posix()}/", f"{PROTO_DIR}/")
        raise ProtoBuildError(f"protoc failed (exit {result.returncode}):\n{detail.strip()}")
    return out_root / _GEN_RELATIVE


def build(*, force: bool = False) -> bool:
    """Regenerate the stubs if stale (or `force`); returns True if protoc ran.

    Raises:
        ProtoBuildError: protoc rejected a source, or grpcio-tools is missing.
    """
    if not force and not is_stale():
        return False
    with _locked():
        if not force and not is_stale():  # another process built while we waited
            return False
        protos = sources()
        if not protos:
            raise ProtoBuildError(f"no .proto sources in {PROTO_DIR}")
        version = _tools_version()
        with tempfile.TemporaryDirectory(prefix="virtufin-proto-") as tmp_name:
            generated = _run_protoc(protos, Path(tmp_name))
            outputs = expected_outputs(protos)
            missing = [p.name for p in outputs[:-1] if not (generated / p.name).is_file()]
            if missing:
                raise ProtoBuildError(f"protoc did not produce: {', '.join(missing)}")
            for target in outputs[:-1]:
                os.replace(generated / target.name, target)
        for leftover in _generated_files() - set(outputs[:-1]):
            leftover.unlink()
        # Written last: it records the toolchain and is the newest output of a complete build.
        init_tmp = GEN_DIR / f".{_INIT}.tmp"
        init_tmp.write_text(_init_text(protos, version), encoding="utf-8")
        os.replace(init_tmp, GEN_DIR / _INIT)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; exit 0 on success, 1 if stale under `--check`, 2 on error."""
    parser = argparse.ArgumentParser(
        prog="python -m virtufin.proto.build", description="Generate the gRPC Python stubs."
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument(
        "--check", action="store_true", help="only report; exit 1 if the stubs are stale"
    )
    options = parser.parse_args(argv)
    count = len(sources())
    try:
        if options.check:
            stale = is_stale()
            print(f"proto: {'stale' if stale else 'up to date'} ({count} modules)")
            return 1 if stale else 0
        started = time.perf_counter()
        if build(force=options.force):
            elapsed = time.perf_counter() - started
            where = GEN_DIR.relative_to(_IMPORT_ROOT).as_posix()
            print(f"proto: generated {count} modules in {where} ({elapsed:.2f} s)")
        else:
            print(f"proto: up to date ({count} modules)")
    except ProtoBuildError as exc:
        print(f"proto: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
