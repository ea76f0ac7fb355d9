"""flake.lock pins real upstream revisions of every input, in step with flake.nix. The
pinned sources themselves cannot be fetched here: the other tests override every input."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
UPSTREAM = {
    "nixpkgs": ("NixOS", "nixpkgs"),
    "pyproject-nix": ("pyproject-nix", "pyproject.nix"),
    "uv2nix": ("pyproject-nix", "uv2nix"),
    "pyproject-build-systems": ("pyproject-nix", "build-system-pkgs"),
}


def test_every_input_is_pinned_to_an_upstream_revision_and_hash() -> None:
    lock = json.loads((ROOT / "flake.lock").read_text())
    assert lock["version"] == 7
    nodes = lock["nodes"]
    root = nodes[lock["root"]]["inputs"]
    assert set(root) == set(UPSTREAM)
    for name, (owner, repo) in UPSTREAM.items():
        locked = nodes[root[name]]["locked"]
        assert locked["type"] == "github", name
        assert (locked["owner"], locked["repo"]) == (owner, repo), name
        assert re.fullmatch(r"[0-9a-f]{40}", locked["rev"]), name
        assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", locked["narHash"]), name
        assert isinstance(locked["lastModified"], int), name
    for name in ("pyproject-nix", "uv2nix", "pyproject-build-systems"):
        assert nodes[root[name]]["inputs"]["nixpkgs"] == ["nixpkgs"], f"{name} follows nixpkgs"
    assert nodes[root["uv2nix"]]["inputs"]["pyproject-nix"] == ["pyproject-nix"]


def test_the_lock_file_is_in_step_with_the_inputs(
    nix: Any, flake: Path, flake_copy: Callable[[], Path]
) -> None:
    metadata = nix.run(
        "flake", "metadata", "--json", "--no-update-lock-file", f"path:{flake}"
    ).stdout
    locks = json.loads(metadata)["locks"]
    assert locks == json.loads((ROOT / "flake.lock").read_text())

    copy = flake_copy()
    text = (copy / "flake.nix").read_text()
    extra = '    flake-parts.url = "github:hercules-ci/flake-parts";\n'
    (copy / "flake.nix").write_text(text.replace("  inputs = {\n", "  inputs = {\n" + extra, 1))
    stale = nix.run("flake", "metadata", "--no-update-lock-file", f"path:{copy}", check=False)
    assert stale.returncode != 0, "an input missing from flake.lock must not evaluate offline"
