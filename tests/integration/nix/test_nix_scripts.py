"""The shell programs the flake builds (virtufin-nats-streams, virtufin-brokers), run from the
exact text the flake hands to writeShellApplication, with the natscli stand-in and the
machine's nats-server and redis-server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from virtufin.ports import free_port

ROOT = Path(__file__).resolve().parents[3]
NATSCLI = ROOT / "tests/standins/nix/natscli-standin"
STREAMS = sorted(p.stem for p in (ROOT / "infra/nats/streams").glob("*.json"))
# What writeShellApplication puts before the text it is given.
PREAMBLE = "#!/usr/bin/env bash\nset -o errexit\nset -o nounset\nset -o pipefail\n"


def _program(nix: Any, flake: Path, package: str, bin_dir: Path, name: str) -> Path:
    text = nix.eval(flake, f"packages.x86_64-linux.{package}.text")
    path = bin_dir / name
    path.write_text(PREAMBLE + text)
    path.chmod(0o755)
    return path


@pytest.fixture
def bin_dir(nix: Any, flake: Path, tmp_path: Path) -> Path:
    """virtufin-nats-streams and virtufin-brokers as the flake writes them."""
    folder = tmp_path / "bin"
    folder.mkdir()
    _program(nix, flake, "nats-streams", folder, "virtufin-nats-streams")
    _program(nix, flake, "brokers", folder, "virtufin-brokers")
    return folder


@pytest.fixture
def run(bin_dir: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    state = tmp_path / "natscli-state"
    state.mkdir()
    log = tmp_path / "natscli.log"
    log.touch()

    def call(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        path = os.pathsep.join([str(bin_dir), str(NATSCLI), "/usr/sbin", os.environ["PATH"]])
        full = {
            **os.environ,
            "PATH": path,
            "STANDIN_NATS_LOG": str(log),
            "STANDIN_NATS_STATE": str(state),
            **env,
        }
        return subprocess.run(
            list(args), capture_output=True, text=True, env=full, timeout=60, cwd=tmp_path
        )

    return call


def _calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "natscli.log").read_text().splitlines()


def test_streams_are_created_then_updated(
    run: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    streams = str(ROOT / "infra/nats/streams")
    first = run("virtufin-nats-streams", streams, NATS_URL="nats://127.0.0.1:1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"virtufin-nats-streams: created {s}" for s in STREAMS]
    adds = [c for c in _calls(tmp_path) if " stream add " in c]
    assert adds == [
        f"--server nats://127.0.0.1:1 stream add {s} --config {streams}/{s}.json" for s in STREAMS
    ]
    second = run("virtufin-nats-streams", streams, NATS_URL="nats://127.0.0.1:1")
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [f"virtufin-nats-streams: updated {s}" for s in STREAMS]
    assert sum(" stream edit " in c and c.endswith("--force") for c in _calls(tmp_path)) == 4


def test_streams_fail_clearly_without_definitions_or_server(
    run: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("virtufin-nats-streams", str(empty))
    assert result.returncode == 2
    assert "no *.json stream definitions" in result.stderr
    assert run("virtufin-nats-streams", str(tmp_path / "missing")).returncode == 2
    down = tmp_path / "down"
    down.touch()
    result = run(
        "virtufin-nats-streams",
        str(ROOT / "infra/nats/streams"),
        STANDIN_NATS_DOWN=str(down),
        VIRTUFIN_NATS_WAIT_SECONDS="1",
    )
    assert result.returncode == 1
    assert "no JetStream answer" in result.stderr


@pytest.fixture
def brokers_env(
    run: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> Iterator[dict[str, str]]:
    if shutil.which("nats-server", path="/usr/sbin:" + os.environ["PATH"]) is None:
        pytest.fail("nats-server is not installed (apt-get install nats-server)")
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    env = {
        "VIRTUFIN_BROKERS_DIR": str(tmp_path / "brokers"),
        "VIRTUFIN_BROKERS": "nats redis",
        "VIRTUFIN_NATS_PORT": str(free_port()),
        "VIRTUFIN_REDIS_PORT": str(free_port()),
    }
    yield env
    run("virtufin-brokers", "stop", **env)


def test_brokers_start_report_and_stop(
    run: Callable[..., subprocess.CompletedProcess[str]],
    brokers_env: dict[str, str],
    tmp_path: Path,
) -> None:
    started = run("virtufin-brokers", "start", **brokers_env)
    assert started.returncode == 0, started.stderr
    nats_port, redis_port = brokers_env["VIRTUFIN_NATS_PORT"], brokers_env["VIRTUFIN_REDIS_PORT"]
    assert f"NATS is up on 127.0.0.1:{nats_port}" in started.stdout
    assert f"Redis is up on 127.0.0.1:{redis_port}" in started.stdout
    for port in (nats_port, redis_port):
        with socket.create_connection(("127.0.0.1", int(port)), timeout=2):
            pass
    # The flake's default stream folder is the store copy of infra/nats/streams.
    adds = [c for c in _calls(tmp_path) if " stream add " in c]
    assert [c.split()[4] for c in adds] == STREAMS
    assert all(c.startswith(f"--server nats://127.0.0.1:{nats_port} ") for c in adds)
    assert all("/nix/store/" in c for c in adds)

    status = run("virtufin-brokers", "status", **brokers_env)
    assert status.returncode == 0
    assert status.stdout.splitlines() == [
        f"NATS up on 127.0.0.1:{nats_port}",
        f"Redis up on 127.0.0.1:{redis_port}",
    ]
    again = run("virtufin-brokers", "start", **brokers_env)
    assert f"port {nats_port} answers already" in again.stdout

    stopped = run("virtufin-brokers", "stop", **brokers_env)
    assert stopped.returncode == 0, stopped.stderr
    for _ in range(50):
        if run("virtufin-brokers", "status", **brokers_env).returncode == 1:
            break
        subprocess.run(["sleep", "0.1"], check=True)
    assert run("virtufin-brokers", "status", **brokers_env).returncode == 1
    assert run("virtufin-brokers", "restart", **brokers_env).returncode == 2


def test_a_service_wrapper_uses_the_checkout_or_else_its_own_catalogue(
    nix: Any, flake: Path, tmp_path: Path
) -> None:
    text = nix.eval(flake, "packages.x86_64-linux.gateway.text")
    exec_line = text.rstrip().splitlines()[-1]
    assert exec_line.endswith("/bin/virtufin 'serve' 'gateway' \"$@\"")
    program = exec_line.split()[1]
    # Run the wrapper with its `exec` target swapped for a probe that prints what it got.
    probe = tmp_path / "probe"
    probe.write_text('#!/bin/sh\necho "args=$*"\necho "home=${VIRTUFIN_HOME:-}"\n')
    probe.chmod(0o755)
    wrapper = tmp_path / "virtufin-gateway"
    wrapper.write_text(PREAMBLE + text.replace(program, str(probe)))
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUFIN_HOME"}

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    ran = subprocess.run(
        [str(wrapper), "--flag"], capture_output=True, text=True, cwd=outside, env=env, check=True
    )
    lines = ran.stdout.splitlines()
    assert lines[0] == "args=serve gateway --flag"
    assert lines[1].startswith("home=/nix/store/")
    assert lines[1].endswith("/share/virtufin")

    checkout = tmp_path / "checkout"
    (checkout / "sub").mkdir(parents=True)
    for name in ("services.json", "versions.env"):
        shutil.copy(ROOT / name, checkout / name)
    ran = subprocess.run(
        [str(wrapper)], capture_output=True, text=True, cwd=checkout / "sub", env=env, check=True
    )
    assert ran.stdout.splitlines() == ["args=serve gateway", "home="]
