"""Every core module's `__all__` is exactly its public surface (as httpx proves for its own)."""

from __future__ import annotations

import importlib
import inspect

import pytest

MODULES = [
    "virtufin.errors",
    "virtufin.lanes",
    "virtufin.topics",
    "virtufin.envelope",
    "virtufin.config",
    "virtufin.statekeys",
    "virtufin.scenarios",
    "virtufin.state",
    "virtufin.bus",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_exactly_the_public_names_defined_or_reexported(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__), "duplicates in __all__"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"
    defined = {
        attr
        for attr, value in vars(module).items()
        if (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__.startswith(name)
    }
    constants = set(getattr(module, "__annotations__", {}))  # `X: Final = …` declarations
    public = {attr for attr in defined | constants if not attr.startswith("_")}
    assert public <= exported, f"public but not exported from {name}: {sorted(public - exported)}"
