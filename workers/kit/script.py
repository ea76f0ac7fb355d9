"""The script shape (``text/x-python``): ``def Process(event)`` returning ``{type, source, data}``
or ``None``.

`event` is the structured CloudEvent as a dict (``to_dict`` of the envelope). A script reads
its id and parameters from the environment the host sets (``VIRTUFIN_WORKER_ID``,
``VIRTUFIN_WORKER_PARAMS`` as a JSON object, ``VIRTUFIN_WORKER_TOPIC``,
``VIRTUFIN_WORKER_GROUP``). The host owns ``source`` (it is replaced by the worker's URN) and
the extensions; a script may return a list of outputs, or a whole CloudEvent dict (only
``type``, ``data`` and ``subject`` are read).

`ScriptWorker` runs a `Process` function in process: handy in unit tests of a script.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from virtufin.envelope import Envelope, to_dict
from workers.kit.context import Emission
from workers.kit.worker import Worker

__all__ = ["ProcessFunction", "ScriptWorker", "emissions_from_output", "load_process"]

ProcessFunction = Callable[[dict[str, Any]], Any]


def _emission(item: Any) -> Emission:
    if not isinstance(item, Mapping):
        raise ValueError(
            f"output is a {type(item).__name__}; expected a dict {{type, source, data}}"
        )
    kind = item.get("type")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"output has no 'type' string (keys: {sorted(map(str, item))})")
    subject = item.get("subject")
    if subject is not None and not isinstance(subject, str):
        raise ValueError(f"output 'subject' must be a string ({type(subject).__name__} given)")
    return Emission(kind, item.get("data"), subject, None)


def emissions_from_output(output: Any) -> list[Emission]:
    """Turn what `Process` returned (None, a dict, or a list of dicts) into emissions.

    Raises:
        ValueError: garbage — the message says what was returned and what was expected.
    """
    if output is None:
        return []
    if isinstance(output, list | tuple):
        return [_emission(item) for item in output]
    return [_emission(output)]


def load_process(path: str | Path) -> ProcessFunction:
    """Import a script file in this process and return its `Process` function.

    Raises:
        ValueError: the script defines no callable `Process`.
    """
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"_virtufin_script_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    process = getattr(module, "Process", None)
    if not callable(process):
        raise ValueError(f"{path}: defines no function Process(event)")
    return process  # type: ignore[no-any-return]


class ScriptWorker(Worker):
    """Adapts a script's `Process` function to the class interface (in process)."""

    def __init__(self, process: ProcessFunction) -> None:
        self.process = process

    def on_event(self, event: Envelope) -> None:
        for out in emissions_from_output(self.process(to_dict(event))):
            self.ctx.emit(out.type, out.data, subject=out.subject)
