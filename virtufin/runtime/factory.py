"""Pick and build the engine for a manifest: by MIME type, then isolation.

| MIME type                    | isolation  | engine               |
|------------------------------|------------|----------------------|
| application/x-python-class   | in_process | `InProcessEngine`    |
| text/x-python                | process    | `PythonScriptEngine` |
| application/x-native-dll     | in_process | `NativeEngine`       |
| application/x-native-dll     | process    | `NativeSafeEngine`   |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from virtufin.errors import WorkerLoadError
from virtufin.runtime.constants import MIME_NATIVE, MIME_PYTHON_CLASS, MIME_PYTHON_SCRIPT
from virtufin.runtime.engine import Engine
from virtufin.runtime.inprocess import InProcessEngine
from virtufin.runtime.manifest import Isolation, WorkerManifest
from virtufin.runtime.native import NativeEngine, NativeSafeEngine
from virtufin.runtime.process import PythonScriptEngine
from virtufin.runtime.routing import Binding

__all__ = ["ENGINES", "create_engine", "engine_class"]

ENGINES: Final[Mapping[tuple[str, Isolation], type[Engine]]] = {
    (MIME_PYTHON_CLASS, "in_process"): InProcessEngine,
    (MIME_PYTHON_SCRIPT, "process"): PythonScriptEngine,
    (MIME_NATIVE, "in_process"): NativeEngine,
    (MIME_NATIVE, "process"): NativeSafeEngine,
}


def engine_class(manifest: WorkerManifest, *, isolation: Isolation | None = None) -> type[Engine]:
    """The engine class for `manifest` (`isolation` overrides the manifest's).

    Raises:
        WorkerLoadError: no engine runs that MIME type with that isolation.
    """
    key = (manifest.mime_type, isolation or manifest.resolved_isolation)
    found = ENGINES.get(key)
    if found is None:
        raise WorkerLoadError(manifest.id, f"no engine runs {key[0]} with isolation {key[1]}")
    return found


def create_engine(
    manifest: WorkerManifest,
    *,
    params: Mapping[str, Any] | None = None,
    binding: Binding | None = None,
    isolation: Isolation | None = None,
) -> Engine:
    """A new, not yet loaded engine for `manifest`; call `load()` (or use ``with``).

    Example:
        >>> engine = create_engine(WorkerManifest.load("workers/sma_cross/manifest.json"))
        >>> engine.load(); outputs = engine.process(bar); engine.stop()  # doctest: +SKIP
    """
    return engine_class(manifest, isolation=isolation)(manifest, params=params, binding=binding)
