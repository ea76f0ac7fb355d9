"""versions.env as the flake reads it: the same parse as virtufin.config, the toolchain and
Python pins checked against it, a change flowing into the images, and every disagreement an
evaluation error that names its cause."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from virtufin.config import load_versions
from virtufin.deploy import render_all
from virtufin.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
VERSIONS = load_versions(ROOT / "versions.env")
EditVersions = Callable[[Path, Mapping[str, str]], None]
SHELL = "devShells.x86_64-linux.default.drvPath"


def test_the_flake_parses_versions_env_as_the_python_config_does(nix: Any, flake: Path) -> None:
    assert nix.eval(flake, "lib.virtufin.versions") == VERSIONS.entries


@pytest.mark.parametrize(
    ("text", "nix_error"),
    [
        ("A=1\nA=2\n", "is set twice"),
        ("lower=1\n", "keys are upper-case"),
        ("A=$HOME\n", "shell expansion"),
        ("A=\n", "has no value"),
        ("NO_EQUALS\n", "expected KEY=VALUE"),
    ],
)
def test_a_malformed_versions_env_is_refused_by_both_parsers(
    nix: Any, flake_copy: Callable[[], Path], text: str, nix_error: str
) -> None:
    copy = flake_copy()
    (copy / "versions.env").write_text(text)
    with pytest.raises(ConfigError):
        load_versions(copy / "versions.env")
    assert nix_error in nix.fails(copy, "lib.virtufin.versions")


def test_tools_and_python_pins_match_versions_env(nix: Any, flake: Path) -> None:
    report = nix.eval(flake, "lib.virtufin.report.x86_64-linux")
    tools = report["tools"]
    assert tools["python"].startswith(VERSIONS["PYTHON_VERSION"] + ".")
    assert tools["gcc"].startswith(VERSIONS["GCC_VERSION"] + ".")
    assert tools["postgresql"].startswith(VERSIONS["POSTGRES_VERSION"] + ".")
    assert tools["uv"] == VERSIONS["UV_VERSION"]
    assert tools["nats-server"] == VERSIONS["NATS_SERVER_VERSION"]
    assert tools["redis"] == VERSIONS["REDIS_VERSION"]
    assert report["python"] == VERSIONS.python_pins()


def test_a_version_change_reaches_the_images_and_the_manifests(
    nix: Any, flake_copy: Callable[[], Path], edit_versions: EditVersions
) -> None:
    copy = flake_copy()
    edit_versions(copy, {"VIRTUFIN_VERSION": "0.2.0", "IMAGE_REGISTRY": "ghcr.io/acme/virtufin"})
    image = nix.eval(
        copy,
        "packages.x86_64-linux.gateway-image",
        apply="p: { inherit (p) imageName imageTag; "
        'version = p.virtufinImage.config.Labels."org.opencontainers.image.version"; }',
    )
    assert image == {
        "imageName": "ghcr.io/acme/virtufin/gateway",
        "imageTag": "0.2.0",
        "version": "0.2.0",
    }
    manifest = render_all(copy)[Path("infra/k8s/services/gateway-deployment.yaml")]
    assert "image: ghcr.io/acme/virtufin/gateway:0.2.0\n" in manifest
    assert nix.eval(copy, "packages.x86_64-linux.venv.name") == "virtufin-env-0.2.0"


def test_a_broker_version_without_a_pinned_source_is_an_error(
    nix: Any, flake_copy: Callable[[], Path], edit_versions: EditVersions
) -> None:
    copy = flake_copy()
    edit_versions(copy, {"NATS_SERVER_VERSION": "2.10.99"})
    error = nix.fails(copy, SHELL)
    assert "versions.env pins nats-server 2.10.99" in error
    assert "nix/pins.nix has no source hash" in error


def test_a_nixpkgs_toolchain_that_disagrees_is_an_error(
    nix: Any, flake: Path, tmp_path: Path
) -> None:
    standin = tmp_path / "nixpkgs-standin"
    shutil.copytree(ROOT / "tests/standins/nix/nixpkgs-standin", standin)
    pkgs = standin / "pkgs.nix"
    pkgs.write_text(
        pkgs.read_text().replace('pythonFor "3.11.13" "3.11"', 'pythonFor "3.12.1" "3.12"')
    )
    error = nix.fails(flake, SHELL, standins={"nixpkgs": standin})
    assert "python 3.12.1 does not match PYTHON_VERSION=3.11" in error


def test_a_toolchain_nixpkgs_lacks_is_an_error(
    nix: Any, flake_copy: Callable[[], Path], edit_versions: EditVersions
) -> None:
    copy = flake_copy()
    edit_versions(copy, {"POSTGRES_VERSION": "13"})
    assert "the locked nixpkgs has no `postgresql_13`" in nix.fails(copy, SHELL)


def test_a_python_pin_uv_lock_disagrees_with_is_an_error(
    nix: Any, flake_copy: Callable[[], Path], edit_versions: EditVersions
) -> None:
    copy = flake_copy()
    edit_versions(copy, {"PY_DAGSTER": "1.0.0"})
    problems = nix.eval(copy, "lib.virtufin.report.x86_64-linux.versionProblems")
    assert problems == ["PY_DAGSTER=1.0.0 but uv.lock locks dagster 1.13.27"]
    assert "versions.env disagrees with the flake" in nix.fails(copy, SHELL)
    failures = nix.eval(copy, "checks.x86_64-linux.flake-eval.failures")
    assert problems[0] in failures
