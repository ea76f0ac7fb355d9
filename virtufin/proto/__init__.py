"""Virtufin's protobuf contracts: the `.proto` sources and their generated Python stubs.

The sources (`common`, `gateway`, `workmanager`, `marketdata`, `execution`, `worker`) live in
this folder, all in `package virtufin`. The Python stubs are generated at build time by
`make proto` / `python -m virtufin.proto.build` into `virtufin/proto/gen/`, which is git-ignored
and never edited by hand. Code that imports the stubs on a possibly fresh checkout calls
`ensure_built()` first (it only stats files when the stubs are current).

Example:
    >>> from virtufin.proto import ensure_built
    >>> ensure_built()
    >>> from virtufin.proto.gen import common_pb2
    >>> common_pb2.CloudEvent(id="1", source="urn:com.virtufin.test").source
    'urn:com.virtufin.test'
"""

from __future__ import annotations

__all__ = ["ensure_built"]


def ensure_built() -> None:
    """Generate `virtufin/proto/gen/` if it is missing or older than the `.proto` sources.

    Safe to call from several processes at once (the build takes a file lock) and cheap when
    nothing changed.

    Raises:
        virtufin.proto.build.ProtoBuildError: protoc failed or grpcio-tools is missing.
    """
    # Imported here, not at module level: `python -m virtufin.proto.build` imports this package
    # first, and an eager import would make runpy warn about a module imported twice.
    from virtufin.proto import build

    build.build()
