"""What `virtufin serve <name>` runs with: ``services.json`` + environment + flags.

Precedence (as everywhere in Virtufin): ``services.json`` < environment < flags.

- gRPC host: ``--grpc-host`` > ``VIRTUFIN_<SVC>_GRPC_HOST`` > ``grpc.host``
- gRPC port: ``--grpc-port`` (0 = any free port) > ``VIRTUFIN_<SVC>_GRPC_PORT`` >
  Virtufin's ``GrpcPort`` > ``grpc.port``
- metrics/health HTTP port: ``--health-port`` (-1 = off) > ``VIRTUFIN_<SVC>_HEALTH_PORT`` >
  Virtufin's ``HttpPort`` > ``healthPort``
- shutdown grace: ``--grace`` > ``VIRTUFIN_GRACE_SECONDS`` > 10 s
- request size limit: ``--max-message-bytes`` > ``VIRTUFIN_MAX_MESSAGE_BYTES`` > 4 MiB
- log level: ``--log-level`` > ``VIRTUFIN_LOG_LEVEL`` > INFO
- bus, state store, API keys, …: ``--bus``, ``--state``, … > ``VIRTUFIN_BUS``,
  ``VIRTUFIN_STATE``, ``VIRTUFIN_API_KEYS``, … (`virtufin.config.Settings`)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.bootstrap.server import DEFAULT_MAX_MESSAGE_BYTES
from virtufin.config import ServiceConfig, ServicesConfig, Settings, load_services, load_settings
from virtufin.errors import ConfigError

__all__ = ["DEFAULT_GRACE_SECONDS", "ServeConfig", "ServeOptions", "load_serve_config"]

DEFAULT_GRACE_SECONDS: Final = 10.0
_SETTINGS_FLAGS: Final = ("bus", "state", "nats_url", "state_dir", "api_keys")


class ServeOptions(BaseModel):
    """How one process serves one service (units in the names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    grpc_host: str
    grpc_port: int = Field(ge=0, le=65535)
    health_port: int | None = Field(default=None, ge=0, le=65535)
    grace_seconds: float = Field(default=DEFAULT_GRACE_SECONDS, ge=0)
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=1024)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def address(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything a service process is configured by."""

    service: ServiceConfig
    services: ServicesConfig
    settings: Settings
    options: ServeOptions


def _pick(flags: Mapping[str, Any], flag: str, env: Mapping[str, str], *names: str) -> Any:
    if flags.get(flag) is not None:
        return flags[flag]
    for name in names:
        if env.get(name, "") != "":
            return env[name]
    return None


def load_serve_config(
    name: str,
    *,
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> ServeConfig:
    """Load the configuration of service `name`.

    Args:
        name: the service's name in ``services.json``.
        flags: command-line values (``None`` = not given): ``services``, ``grpc_host``,
            ``grpc_port``, ``health_port``, ``grace_seconds``, ``max_message_bytes``,
            ``log_level``, and the `Settings` flags ``bus``, ``state``, ``nats_url``,
            ``state_dir``.
        env: the environment (default ``os.environ``).

    Raises:
        ConfigError: naming the file, variable or flag that is wrong.
    """
    flags = dict(flags or {})
    env = os.environ if env is None else env
    services = load_services(flags.get("services")).with_overrides(env)
    service = services.get(name)
    settings = load_settings(
        env=env, flags={k: flags[k] for k in _SETTINGS_FLAGS if flags.get(k) is not None}
    )
    prefix = "VIRTUFIN_" + name.upper().replace("-", "_") + "_"
    health = _pick(flags, "health_port", env, prefix + "HEALTH_PORT", "HttpPort")
    if health is None:
        health = service.health_port
    raw = {
        "grpc_host": _pick(flags, "grpc_host", env) or service.grpc.host,
        "grpc_port": _pick(flags, "grpc_port", env, prefix + "GRPC_PORT", "GrpcPort")
        or service.grpc.port,
        "health_port": None if health is None or int(health) < 0 else int(health),
        "grace_seconds": _pick(flags, "grace_seconds", env, "VIRTUFIN_GRACE_SECONDS"),
        "max_message_bytes": _pick(flags, "max_message_bytes", env, "VIRTUFIN_MAX_MESSAGE_BYTES"),
        "log_level": _pick(flags, "log_level", env, "VIRTUFIN_LOG_LEVEL"),
    }
    if flags.get("grpc_port") is not None:  # `or` above would turn an explicit 0 into the default
        raw["grpc_port"] = flags["grpc_port"]
    try:
        options = ServeOptions.model_validate(
            {k: (v.upper() if k == "log_level" else v) for k, v in raw.items() if v is not None}
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError("serve options", str(err["loc"][0]), str(err["msg"])) from None
    return ServeConfig(service=service, services=services, settings=settings, options=options)
