"""The worker runtime: engines that host workers by MIME type, and the supervisor.

| MIME type                    | engine                                   | where            |
|------------------------------|------------------------------------------|------------------|
| application/x-python-class   | `InProcessEngine`                        | host process     |
| text/x-python                | `PythonScriptEngine`                     | sandboxed child  |
| application/x-native-dll     | `NativeEngine` / `NativeSafeEngine`      | host / child     |

`create_engine(manifest)` picks one; `Supervisor` runs workers on an `EventBus` with lifecycle
events, heartbeats, hot reload and dead-lettering. Contracts: docs/spec/worker-protocol.md and
docs/spec/native-abi.md.

Names are imported lazily, so that the safe-mode child can load `virtufin.runtime.native_lib`
without pulling in pydantic and the bus.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from virtufin.runtime.codestore import CodeVersion
    from virtufin.runtime.engine import Engine, EngineHealth, EngineStatus, EventOutcome
    from virtufin.runtime.factory import ENGINES, create_engine, engine_class
    from virtufin.runtime.inprocess import InProcessEngine, resolve_worker_class
    from virtufin.runtime.lifecycle import LifecycleEvent, WorkerState
    from virtufin.runtime.manifest import EngineOptions, WorkerManifest, resolve_target
    from virtufin.runtime.metrics import MetricsSnapshot, WorkerMetrics
    from virtufin.runtime.native import NativeEngine, NativeSafeEngine
    from virtufin.runtime.native_lib import NativeLibrary
    from virtufin.runtime.process import ProcessEngine, PythonScriptEngine
    from virtufin.runtime.routing import Binding, Routed
    from virtufin.runtime.supervisor import Supervisor, SupervisorConfig, WorkerInfo

__all__ = [
    "ENGINES",
    "Binding",
    "CodeVersion",
    "Engine",
    "EngineHealth",
    "EngineOptions",
    "EngineStatus",
    "EventOutcome",
    "InProcessEngine",
    "LifecycleEvent",
    "MetricsSnapshot",
    "NativeEngine",
    "NativeLibrary",
    "NativeSafeEngine",
    "ProcessEngine",
    "PythonScriptEngine",
    "Routed",
    "Supervisor",
    "SupervisorConfig",
    "WorkerInfo",
    "WorkerManifest",
    "WorkerMetrics",
    "WorkerState",
    "create_engine",
    "engine_class",
    "resolve_target",
    "resolve_worker_class",
]

_HOMES = {
    "CodeVersion": "codestore",
    "Engine": "engine",
    "EngineHealth": "engine",
    "EngineStatus": "engine",
    "EventOutcome": "engine",
    "ENGINES": "factory",
    "create_engine": "factory",
    "engine_class": "factory",
    "InProcessEngine": "inprocess",
    "resolve_worker_class": "inprocess",
    "LifecycleEvent": "lifecycle",
    "WorkerState": "lifecycle",
    "EngineOptions": "manifest",
    "WorkerManifest": "manifest",
    "resolve_target": "manifest",
    "MetricsSnapshot": "metrics",
    "WorkerMetrics": "metrics",
    "NativeEngine": "native",
    "NativeSafeEngine": "native",
    "NativeLibrary": "native_lib",
    "ProcessEngine": "process",
    "PythonScriptEngine": "process",
    "Binding": "routing",
    "Routed": "routing",
    "Supervisor": "supervisor",
    "SupervisorConfig": "supervisor",
    "WorkerInfo": "supervisor",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'virtufin.runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"virtufin.runtime.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
