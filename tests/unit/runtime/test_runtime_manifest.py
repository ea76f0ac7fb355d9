"""Worker manifests: validation with field-named errors, path resolution, CLI targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virtufin.errors import WorkerLoadError
from virtufin.runtime.factory import engine_class
from virtufin.runtime.inprocess import InProcessEngine
from virtufin.runtime.manifest import WorkerManifest, resolve_target
from virtufin.runtime.native import NativeEngine, NativeSafeEngine
from virtufin.runtime.process import PythonScriptEngine

ROOT = Path(__file__).resolve().parents[3]
BASE = {"id": "w", "mime_type": "text/x-python", "entry_point": "code.py"}


def invalid(**changes) -> str:
    with pytest.raises(WorkerLoadError) as info:
        WorkerManifest.from_dict({**BASE, **changes})
    return info.value.reason


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"id": "has space"}, "id: String should match pattern"),
        ({"mime_type": "text/x-csharp"}, "mime_type: Input should be"),
        ({"topics": ["a..b"]}, "topics: Value error, invalid topic 'a..b'"),
        ({"output_topic": "act.BTC.exchange.x.y.z"}, "act topics MUST NOT carry a selector"),
        ({"isolation": "in_process"}, "text/x-python cannot run with isolation in_process"),
        ({"abi_version": 2}, "abi_version 2 is not supported (this host speaks 1)"),
        ({"params_schema": {"pattern": "x"}}, "unsupported schema keyword 'pattern'"),
        ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
        ({"options": {"event_timeout_secs": 0}}, "options.event_timeout_secs"),
    ],
)
def test_invalid_manifests_name_the_field(changes, message):
    assert message in invalid(**changes)


def test_every_bundled_manifest_is_valid_and_picks_its_engine():
    cases = {
        "workers/sma_cross/manifest.json": InProcessEngine,
        "workers/sma_cross/script.manifest.json": PythonScriptEngine,
        "workers/risk_limit/manifest.json": InProcessEngine,
        "workers/echo/manifest.json": InProcessEngine,
        "native/src/sma_cross.manifest.json": NativeEngine,
        "native/src/risk_limit.manifest.json": NativeEngine,
    }
    for path, engine in cases.items():
        manifest = WorkerManifest.load(ROOT / path)
        assert engine_class(manifest) is engine, path
    native = WorkerManifest.load(ROOT / "native/src/sma_cross.manifest.json")
    assert engine_class(native, isolation="process") is NativeSafeEngine


def test_file_entry_points_resolve_against_the_manifest_folder(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({**BASE, "entry_point": "sub/code.py"}))
    manifest = WorkerManifest.load(tmp_path / "manifest.json")
    assert manifest.entry_point == str((tmp_path / "sub" / "code.py").resolve())
    klass = {**BASE, "mime_type": "application/x-python-class", "entry_point": "w.py:W"}
    (tmp_path / "k.json").write_text(json.dumps(klass))
    assert WorkerManifest.load(tmp_path / "k.json").entry_point == f"{tmp_path / 'w.py'}:W"
    module = {**klass, "entry_point": "pkg.mod:W"}
    (tmp_path / "m.json").write_text(json.dumps(module))
    assert WorkerManifest.load(tmp_path / "m.json").entry_point == "pkg.mod:W"


def test_unreadable_manifests(tmp_path):
    with pytest.raises(WorkerLoadError, match="cannot read manifest"):
        WorkerManifest.load(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(WorkerLoadError, match="a manifest is a JSON object"):
        WorkerManifest.load(tmp_path / "list.json")


def test_cli_targets(tmp_path):
    script = tmp_path / "my-worker.py"
    script.write_text("def Process(event):\n    return None\n")
    found = resolve_target(str(script))
    assert (found.id, found.mime_type, found.entry_point) == (
        "my-worker",
        "text/x-python",
        str(script.resolve()),
    )
    beside = resolve_target(str(ROOT / "workers/sma_cross/script.py"))
    assert beside.id == "sma_cross_script"
    assert beside.params_schema
    klass = resolve_target("workers.echo.worker:EchoWorker")
    assert (klass.id, klass.mime_type) == ("echoworker", "application/x-python-class")
    lib = tmp_path / "libthing.so"
    lib.write_bytes(b"")
    assert resolve_target(str(lib)).id == "thing"
    assert resolve_target(str(lib)).mime_type == "application/x-native-dll"
    with pytest.raises(WorkerLoadError, match="no such file"):
        resolve_target(str(tmp_path / "gone.py"))
    with pytest.raises(WorkerLoadError, match=r"needs <file\.py>:<Class>"):
        resolve_target(str(script), mime="application/x-python-class")
