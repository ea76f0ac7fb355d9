"""The flake's outputs, evaluated offline with every input overridden by a stand-in: one
package, app and image per service in services.json, the platform packages, the dev shell
with the brokers, the checks, and derivations that instantiate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from virtufin.config import load_services, load_versions
from virtufin.deploy import render_all

ROOT = Path(__file__).resolve().parents[3]
SERVICES = load_services(ROOT / "services.json")
VERSIONS = load_versions(ROOT / "versions.env")
IMAGES = """ps: builtins.mapAttrs (n: p: {
  name = p.imageName; tag = p.imageTag; cmd = p.virtufinImage.config.Cmd;
  ports = builtins.attrNames p.virtufinImage.config.ExposedPorts;
  user = p.virtufinImage.config.User;
}) (builtins.removeAttrs ps
  (builtins.filter (n: builtins.match ".*-image" n == null) (builtins.attrNames ps)))"""


def _systems(nix: Any, flake: Path) -> list[str]:
    systems: list[str] = nix.eval(flake, "lib.virtufin.systems")
    assert "x86_64-linux" in systems
    return systems


def test_every_service_has_a_package_an_app_and_an_image(nix: Any, flake: Path) -> None:
    shown = json.loads(nix.run("flake", "show", "--json", flake=flake).stdout)
    for system in _systems(nix, flake):
        packages, apps = shown["packages"][system], shown["apps"][system]
        linux = system.endswith("-linux")
        for svc in SERVICES.services:
            assert packages[svc.name]["type"] == "derivation", (system, svc.name)
            assert packages[svc.name]["name"] == f"virtufin-{svc.name}"
            assert apps[svc.name]["type"] == "app"
            assert (f"{svc.name}-image" in packages) == linux, (system, svc.name)
        for name in ("default", "pipelines", "native-workers", "venv", "nats-streams", "brokers"):
            assert name in packages, (system, name)
        for name in ("pipelines-image", "nats-streams-image"):
            assert (name in packages) == linux, (system, name)
        assert {"default", "virtufin", "pipelines", "brokers"} <= set(apps)
        assert set(shown["devShells"][system]) == {"default"}
        assert set(shown["checks"][system]) == {"pytest", "ruff", "mypy", "flake-eval"}


def test_the_flakes_own_evaluation_tests_pass_on_every_system(nix: Any, flake: Path) -> None:
    report = nix.eval(flake, "lib.virtufin.report")
    for system in _systems(nix, flake):
        assert report[system]["evalFailures"] == [], system
        assert report[system]["versionProblems"] == [], system
    failures = nix.eval(flake, "checks.x86_64-linux.flake-eval.failures")
    assert failures == []


def test_images_are_the_ones_the_kubernetes_manifests_run(nix: Any, flake: Path) -> None:
    images = nix.eval(flake, "packages.x86_64-linux", apply=IMAGES)
    deployments = render_all(ROOT)
    registry, tag = VERSIONS["IMAGE_REGISTRY"], VERSIONS["VIRTUFIN_VERSION"]
    for svc in SERVICES.services:
        image = images[f"{svc.name}-image"]
        ref = f"{image['name']}:{image['tag']}"
        assert ref == f"{registry}/{svc.name}:{tag}"
        manifest = deployments[Path(f"infra/k8s/services/{svc.name}-deployment.yaml")]
        assert f"image: {ref}\n" in manifest
        assert image["cmd"] == ["virtufin", "serve", svc.name]
        assert sorted(image["ports"]) == sorted(
            f"{p}/tcp" for p in (svc.grpc.port, svc.health_port) if p is not None
        )
        assert image["user"] == "65532:65532"
    streams = images["nats-streams-image"]
    job = deployments[Path("infra/k8s/nats-streams-job.yaml")]
    assert f"image: {streams['name']}:{streams['tag']}\n" in job
    assert streams["cmd"][0] == "virtufin-nats-streams"
    assert images["pipelines-image"]["name"] == f"{registry}/pipelines"
    assert len(images) == len(SERVICES.services) + 2


def test_apps_run_the_service_and_the_default_app_runs_the_main_job(nix: Any, flake: Path) -> None:
    programs = nix.eval(
        flake, "apps.x86_64-linux", apply="as: builtins.mapAttrs (n: a: a.program) as"
    )
    packages = nix.eval(
        flake,
        "packages.x86_64-linux",
        apply="ps: builtins.mapAttrs (n: p: { out = p.outPath; "
        "command = p.virtufinCommand or null; text = p.text or null; }) ps",
    )
    for svc in SERVICES.services:
        package = packages[svc.name]
        assert programs[svc.name] == f"{package['out']}/bin/virtufin-{svc.name}"
        assert package["command"] == ["virtufin", "serve", svc.name]
        assert f"/bin/virtufin 'serve' '{svc.name}' \"$@\"" in package["text"]
        assert "VIRTUFIN_HOME" in package["text"]
    assert programs["default"] == f"{packages['virtufin-run']['out']}/bin/virtufin-run"
    assert packages["virtufin-run"]["command"] == ["virtufin", "run"]
    assert packages["pipelines"]["command"][:3] == ["dagster", "api", "grpc"]


def test_the_dev_shell_has_the_toolchain_and_the_brokers(nix: Any, flake: Path) -> None:
    tools = nix.eval(
        flake,
        "devShells.x86_64-linux.default",
        apply="d: map (p: { name = p.pname or p.name; version = p.version or null; }) "
        "d.nativeBuildInputs",
    )
    found = {t["name"]: t["version"] for t in tools}
    for broker in ("nats-server", "redis", "postgresql", "virtufin-brokers"):
        assert broker in found, f"the dev shell lacks {broker}"
    for tool in (
        "virtufin-dev-env",
        "uv",
        "gcc-wrapper",
        "gnumake",
        "protobuf",
        "natscli",
        "dapr-cli",
        "kubectl",
        "kubernetes-helm",
        "virtufin-nats-streams",
    ):
        assert tool in found, f"the dev shell lacks {tool}"
    assert found["nats-server"] == VERSIONS["NATS_SERVER_VERSION"]
    assert found["redis"] == VERSIONS["REDIS_VERSION"]
    assert found["uv"] == VERSIONS["UV_VERSION"]
    assert found["postgresql"].startswith(VERSIONS["POSTGRES_VERSION"] + ".")
    assert found["gcc-wrapper"].startswith(VERSIONS["GCC_VERSION"] + ".")
    env = nix.eval(
        flake,
        "devShells.x86_64-linux.default",
        apply="d: { inherit (d) DAPR_RUNTIME_VERSION UV_NO_SYNC shellHook; }",
    )
    assert env["DAPR_RUNTIME_VERSION"] == VERSIONS["DAPR_RUNTIME_VERSION"]
    assert env["UV_NO_SYNC"] == "1"
    assert "virtufin-brokers start" in env["shellHook"]


def test_every_derivation_instantiates(nix: Any, flake: Path) -> None:
    """String contexts, store paths and the pinned hashes' syntax are checked here."""
    for attr in ("packages.x86_64-linux", "checks.x86_64-linux", "devShells.x86_64-linux"):
        paths = nix.eval(flake, attr, apply="s: builtins.mapAttrs (n: d: d.drvPath) s")
        assert paths
        for name, path in paths.items():
            assert path.startswith("/nix/store/"), (attr, name)
            assert path.endswith(".drv"), (attr, name)
    nix.run("flake", "check", "--no-build", flake=flake)


def test_the_native_workers_build_from_the_native_tree_only(
    nix: Any, flake_copy: Callable[[], Path]
) -> None:
    copy = flake_copy()
    for rel, text in {
        "native/Makefile": "all:\n",
        "native/src/worker.c": "int x;\n",
        "native/include/virtufin_worker.h": "#define ABI 1\n",
        "native/build/libstale.so": "stale",
        "native-notes.txt": "not native\n",
    }.items():
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_text(text)
    native = nix.eval(
        copy,
        "packages.x86_64-linux.native-workers",
        apply="d: { src = d.src; inherit (d) buildPhase abiVersion; }",
    )
    src = Path(native["src"])
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    assert files == ["native/Makefile", "native/include/virtufin_worker.h", "native/src/worker.c"]
    assert "make -C native" in native["buildPhase"]
    assert native["abiVersion"] == load_versions(ROOT / "versions.env")["NATIVE_ABI_VERSION"]
