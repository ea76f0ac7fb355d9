"""`__all__` of the runtime and the DevKit is exactly their public surface."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

MODULES = [
    "virtufin.runtime.codestore",
    "virtufin.runtime.engine",
    "virtufin.runtime.factory",
    "virtufin.runtime.frames",
    "virtufin.runtime.inprocess",
    "virtufin.runtime.lifecycle",
    "virtufin.runtime.manifest",
    "virtufin.runtime.metrics",
    "virtufin.runtime.native",
    "virtufin.runtime.native_lib",
    "virtufin.runtime.process",
    "virtufin.runtime.routing",
    "virtufin.runtime.supervisor",
    "virtufin.runtime.wire",
    "virtufin.cli.worker",
    "workers.kit.clock",
    "workers.kit.commands",
    "workers.kit.context",
    "workers.kit.ids",
    "workers.kit.params",
    "workers.kit.script",
    "workers.kit.snapshots",
    "workers.kit.worker",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_exactly_the_public_names(name):
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__)
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"
    defined = {
        attr
        for attr, value in vars(module).items()
        if (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ == name
    }
    public = {attr for attr in defined if not attr.startswith("_")}
    assert public <= exported, f"public but not exported: {sorted(public - exported)}"


@pytest.mark.parametrize("package", ["virtufin.runtime", "workers.kit"])
def test_package_reexports_resolve(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None
    with pytest.raises(AttributeError):
        module.NoSuchThing  # noqa: B018


def test_the_native_loader_does_not_pull_in_the_heavy_runtime():
    code = (
        "import sys; import virtufin.runtime.native_lib; "
        "print(sorted(m for m in ('pydantic', 'virtufin.bus', 'virtufin.runtime.supervisor') "
        "if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert done.stdout.strip() == "[]"
