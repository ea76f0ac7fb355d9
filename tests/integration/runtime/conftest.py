"""Fixtures of the runtime integration tests: the native build, test C workers, the bar
fixture, and builders of manifests for throwaway scripts."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from virtufin.envelope import Envelope, decode
from virtufin.runtime.constants import MIME_NATIVE, MIME_PYTHON_SCRIPT
from virtufin.runtime.manifest import EngineOptions, WorkerManifest

ROOT = Path(__file__).resolve().parents[3]
CWORKERS = Path(__file__).resolve().parent / "cworkers"
BARS = ROOT / "tests" / "fixtures" / "bars_small.jsonl"
FAST_OPTIONS: dict[str, Any] = {
    "event_timeout_secs": 2.0,
    "ping_interval_secs": 0,
    "restart_backoff_secs": 0.01,
    "max_backoff_secs": 0.05,
}


@pytest.fixture(scope="session")
def native_build() -> Path:
    """``make -s -C native`` (what ``make native`` runs); the build folder."""
    subprocess.run(["make", "-s", "-C", str(ROOT / "native")], check=True, timeout=120)
    return ROOT / "native" / "build"


@pytest.fixture(scope="session")
def cworkers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test C workers of ``cworkers/``, built with gcc: name → library path."""
    out = tmp_path_factory.mktemp("cworkers")
    libs = {}
    for source in sorted(CWORKERS.glob("*.c")):
        lib = out / f"lib{source.stem}.so"
        subprocess.run(
            ["gcc", "-O2", "-fPIC", "-shared", "-Wall", "-Werror", "-fvisibility=hidden",
             f"-I{ROOT / 'native' / 'include'}", "-o", str(lib), str(source)],
            check=True,
            timeout=60,
        )  # fmt: skip
        libs[source.stem] = lib
    return libs


@pytest.fixture(scope="session")
def bars() -> list[Envelope]:
    """The 300 bars of tests/fixtures/bars_small.jsonl."""
    return [decode(line) for line in BARS.read_bytes().splitlines()]


@pytest.fixture
def script(tmp_path: Path) -> Callable[..., WorkerManifest]:
    """Write a throwaway ``text/x-python`` script; return its manifest (fast timeouts)."""

    def make(source: str, *, worker_id: str = "w", **options: Any) -> WorkerManifest:
        path = tmp_path / f"{worker_id}.py"
        path.write_text(textwrap.dedent(source))
        return WorkerManifest(
            id=worker_id,
            mime_type=MIME_PYTHON_SCRIPT,
            entry_point=str(path),
            options=EngineOptions(**{**FAST_OPTIONS, **options}),
        )

    return make


@pytest.fixture
def native_manifest(cworkers: dict[str, Path]) -> Callable[..., WorkerManifest]:
    """A manifest for one of the test C workers (fast timeouts)."""

    def make(name: str, *, isolation: str = "in_process", **options: Any) -> WorkerManifest:
        return WorkerManifest(
            id=name,
            mime_type=MIME_NATIVE,
            entry_point=str(cworkers[name]),
            isolation=isolation,  # type: ignore[arg-type]
            options=EngineOptions(**{**FAST_OPTIONS, **options}),
        )

    return make


def event(data: Any = None, *, type: str = "com.example.test", **attrs: Any) -> Envelope:
    """A test input event."""
    return Envelope.new(type=type, source="urn:com.virtufin.test", data=data, **attrs)


@pytest.fixture
def make_event() -> Callable[..., Envelope]:
    return event
