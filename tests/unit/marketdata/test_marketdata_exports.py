"""`virtufin.marketdata.__all__` is exactly its public surface."""

from __future__ import annotations

import inspect

import virtufin.marketdata as marketdata


def test_all_names_every_public_class_and_function_of_the_package() -> None:
    exported = set(marketdata.__all__)
    assert len(exported) == len(marketdata.__all__)
    assert all(hasattr(marketdata, name) for name in exported)
    public = {
        name
        for name, value in vars(marketdata).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__.startswith("virtufin.marketdata")
    }
    assert public <= exported
