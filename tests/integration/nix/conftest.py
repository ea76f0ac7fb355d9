"""Fixtures of the flake tests: `nix` (Debian's nix-bin is enough), evaluating offline a copy
of the flake with every input overridden by the stand-ins of tests/standins/nix.

These tests never skip: without `nix` they fail and say how to install it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
STANDINS = ROOT / "tests/standins/nix"
# flake input -> stand-in folder; every input is overridden, nothing is fetched.
INPUTS: Mapping[str, str] = {
    "nixpkgs": "nixpkgs-standin",
    "pyproject-nix": "pyproject-nix-standin",
    "uv2nix": "uv2nix-standin",
    "pyproject-build-systems": "build-system-pkgs-standin",
}
# What the flake reads; copied so that a test can change it (and because the working copy's
# untracked files would be invisible to a git-based flake).
FLAKE_FILES = (
    "flake.nix",
    "flake.lock",
    "nix",
    "services.json",
    "versions.env",
    "pyproject.toml",
    "uv.lock",
    "infra/nats/streams",
)
SYSTEMS = ("x86_64-linux", "aarch64-linux", "aarch64-darwin")
INSTALL_HINT = (
    "`nix` is not installed; these tests evaluate the flake and must not be skipped. "
    "Install Debian's Nix: apt-get update && apt-get install -y nix-bin"
)


def copy_flake(dest: Path) -> Path:
    """Copy the files the flake reads into `dest` (created) and return it."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in FLAKE_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, dirs_exist_ok=True)
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / name)
    return dest


@dataclass(frozen=True)
class Nix:
    """Runs `nix` offline with flakes enabled and a private cache folder."""

    exe: str
    cache: Path

    def run(
        self,
        *args: str,
        flake: Path | None = None,
        attr: str = "",
        standins: Mapping[str, Path] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        command = [
            self.exe,
            *args,
            "--extra-experimental-features",
            "nix-command flakes",
            "--offline",
        ]
        if flake is not None:
            overrides = {name: STANDINS / folder for name, folder in INPUTS.items()}
            overrides.update(standins or {})
            for name, path in overrides.items():
                command += ["--override-input", name, f"path:{path}"]
            command += ["--no-write-lock-file", f"path:{flake}" + (f"#{attr}" if attr else "")]
        env = {**os.environ, "XDG_CACHE_HOME": str(self.cache), "NIX_CONFIG": "warn-dirty = false"}
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
        return result

    def eval(self, flake: Path, attr: str, *, apply: str | None = None, **kw: Any) -> Any:
        extra = ["--apply", apply] if apply else []
        out = self.run("eval", "--json", *extra, flake=flake, attr=attr, **kw)
        return json.loads(out.stdout)

    def fails(self, flake: Path, attr: str, *, apply: str | None = None, **kw: Any) -> str:
        """Evaluate `attr`, expecting failure; returns the error output."""
        extra = ["--apply", apply] if apply else []
        out = self.run("eval", "--json", *extra, flake=flake, attr=attr, check=False, **kw)
        assert out.returncode != 0, f"{attr} evaluated although it should fail: {out.stdout}"
        return out.stderr


@pytest.fixture(scope="session")
def nix(tmp_path_factory: pytest.TempPathFactory) -> Nix:
    exe = shutil.which("nix")
    if exe is None:
        pytest.fail(INSTALL_HINT)
    return Nix(exe, tmp_path_factory.mktemp("nix-cache"))


@pytest.fixture(scope="session")
def flake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project's flake and the files it reads (not to be changed by tests)."""
    return copy_flake(tmp_path_factory.mktemp("flake"))


@pytest.fixture
def flake_copy(tmp_path: Path) -> Callable[[], Path]:
    """A fresh copy a test may change."""

    def make() -> Path:
        return copy_flake(tmp_path / "flake")

    return make


def _edit_versions(flake: Path, changes: Mapping[str, str]) -> None:
    path = flake / "versions.env"
    lines = path.read_text().splitlines()
    seen = set()
    for i, line in enumerate(lines):
        key = line.partition("=")[0]
        if key in changes:
            lines[i] = f"{key}={changes[key]}"
            seen.add(key)
    assert seen == set(changes), f"versions.env lacks {set(changes) - seen}"
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def edit_versions() -> Callable[[Path, Mapping[str, str]], None]:
    """`edit_versions(copy, {"KEY": "value"})` rewrites lines of a copy's versions.env."""
    return _edit_versions
