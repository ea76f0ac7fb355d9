"""Container image references, every tag taken from `versions.env`.

The flake builds ``<IMAGE_REGISTRY>/<name>:<VIRTUFIN_VERSION>`` for every service, for the
Dagster code location (``pipelines``) and for the stream-creating job (``nats-streams``); the
brokers and the Dapr sidecar are upstream images pinned to the versions of the same file.

Example:
    >>> service_image("gateway", load_versions())
    'registry.local/virtufin/gateway:0.1.0'
"""

from __future__ import annotations

from typing import Final

from virtufin.config import Versions

__all__ = [
    "NATS_STREAMS_IMAGE",
    "PIPELINES_IMAGE",
    "daprd_image",
    "nats_image",
    "redis_image",
    "service_image",
]

NATS_STREAMS_IMAGE: Final = "nats-streams"
PIPELINES_IMAGE: Final = "pipelines"


def service_image(name: str, versions: Versions) -> str:
    """``<IMAGE_REGISTRY>/<name>:<VIRTUFIN_VERSION>``: an image the flake builds."""
    return f"{versions['IMAGE_REGISTRY']}/{name}:{versions['VIRTUFIN_VERSION']}"


def daprd_image(versions: Versions) -> str:
    """The Dapr sidecar image of `DAPR_RUNTIME_VERSION`."""
    return f"daprio/daprd:{versions['DAPR_RUNTIME_VERSION']}"


def nats_image(versions: Versions) -> str:
    """The NATS server image of `NATS_SERVER_VERSION`."""
    return f"nats:{versions['NATS_SERVER_VERSION']}-alpine"


def redis_image(versions: Versions) -> str:
    """The Redis image of `REDIS_VERSION`."""
    return f"redis:{versions['REDIS_VERSION']}-alpine"
