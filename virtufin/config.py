"""Typed configuration: `versions.env`, `services.json` and the process settings.

Precedence, as in Virtufin: built-in defaults < files < environment variables < CLI flags.
A broken file raises one `ConfigError` naming the file, the field and the reason; nothing is
returned half-configured.

Example:
    >>> services = load_services("services.json")
    >>> services.get("gateway").grpc.port
    5002
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from virtufin.errors import ConfigError, TopicError

__all__ = [
    "BusKind",
    "GrpcConfig",
    "JobsConfig",
    "PubsubConfig",
    "ServiceConfig",
    "ServicesConfig",
    "Settings",
    "StateConfig",
    "StateKind",
    "Versions",
    "load_services",
    "load_settings",
    "load_versions",
    "parse_versions",
    "project_root",
]

_KEY_RE: Final = re.compile(r"^[A-Z][A-Z0-9_]*$")
_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_CRON_FIELD_RE: Final = re.compile(r"^[0-9*/,\-A-Za-z?LW#]+$")

BusKind = Literal["memory", "nats", "dapr"]
StateKind = Literal["memory", "sqlite", "postgres", "redis", "dapr"]


def project_root() -> Path:
    """The checkout holding `services.json`: `VIRTUFIN_HOME`, else the nearest parent of cwd."""
    home = os.environ.get("VIRTUFIN_HOME")
    if home is not None:
        return Path(home)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "services.json").is_file() and (folder / "versions.env").is_file():
            return folder
    return Path(__file__).resolve().parent.parent


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------- versions.env


class Versions(_Model):
    """The pinned versions of `versions.env`, in file order."""

    entries: dict[str, str]
    path: str = "versions.env"

    def __getitem__(self, key: str) -> str:
        try:
            return self.entries[key]
        except KeyError:
            raise ConfigError(self.path, key, "is not set") from None

    def python_pins(self) -> dict[str, str]:
        """`PY_<NAME>` entries as PyPI distribution name → version."""
        return {
            key[3:].lower().replace("_", "-"): value
            for key, value in self.entries.items()
            if key.startswith("PY_")
        }


def parse_versions(text: str, *, path: str = "versions.env") -> Versions:
    """Parse `KEY=VALUE` lines; `#` starts a comment line; values are taken literally.

    Raises:
        ConfigError: a line is not `KEY=VALUE`, a key is not upper-case, a key repeats,
            or a value is empty or looks like shell expansion.
    """
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        field = f"line {number}"
        if not sep:
            raise ConfigError(path, field, "expected KEY=VALUE")
        if not _KEY_RE.match(key):
            raise ConfigError(path, f"{field} ({key})", "keys are upper-case letters, digits, _")
        if key in entries:
            raise ConfigError(path, f"{field} ({key})", "is set twice")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if not value:
            raise ConfigError(path, f"{field} ({key})", "has no value")
        if "$" in value or "`" in value:
            raise ConfigError(path, f"{field} ({key})", "shell expansion is not supported")
        entries[key] = value
    return Versions(entries=entries, path=path)


def load_versions(path: str | Path | None = None) -> Versions:
    """Read and parse `versions.env` (default: the project root's)."""
    file = Path(path) if path is not None else project_root() / "versions.env"
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), "", f"cannot be read ({exc.strerror})") from exc
    return parse_versions(text, path=str(file))


# --------------------------------------------------------------------------- services.json

Port = Annotated[int, Field(ge=1, le=65535)]


class GrpcConfig(_Model):
    """Where a service's gRPC server listens; `hosts` round-robins across replicas."""

    host: str = "127.0.0.1"
    port: Port
    hosts: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class PubsubConfig(_Model):
    """The Dapr pub/sub component a service uses."""

    pubsub_name: str = Field(default="pubsub", alias="pubsubName")


class StateConfig(_Model):
    """The Dapr state store a service uses and the keys it registers at start."""

    store_name: str = Field(default="statestore", alias="storeName")
    keys: tuple[str, ...] = ()


class JobsConfig(_Model):
    """Cron schedules owned by a service (five-field cron expressions)."""

    crons: tuple[str, ...] = ()

    @field_validator("crons")
    @classmethod
    def _five_fields(cls, crons: tuple[str, ...]) -> tuple[str, ...]:
        for cron in crons:
            parts = cron.split()
            if len(parts) != 5 or not all(_CRON_FIELD_RE.match(p) for p in parts):
                raise ValueError(f"{cron!r} is not a five-field cron expression")
        return crons


class ServiceConfig(_Model):
    """One entry of `services.json`: Virtufin's shape plus what this project runs."""

    name: str
    dapr_app_id: str = Field(alias="daprAppId")
    module: str
    role: Literal["gateway", "connector", "production", "backtest", "observer"] = "observer"
    grpc: GrpcConfig
    health_port: Port | None = Field(default=None, alias="healthPort")
    pubsub: PubsubConfig = PubsubConfig()
    state: StateConfig = StateConfig()
    jobs: JobsConfig = JobsConfig()
    publishes: tuple[str, ...] = ()
    subscribes: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError("service names are lower-case letters, digits and '-'")
        return name

    @field_validator("module")
    @classmethod
    def _module(cls, module: str) -> str:
        if not re.match(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$", module):
            raise ValueError("expected a dotted module path, optionally ':function'")
        return module

    @field_validator("publishes", "subscribes")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        from virtufin.lanes import validate_pattern

        for pattern in patterns:
            try:
                validate_pattern(pattern)
            except TopicError as exc:
                raise ValueError(exc.reason + f" ({pattern!r})") from None
        return patterns


class ServicesConfig(_Model):
    """The service catalogue (`services.json`)."""

    services: tuple[ServiceConfig, ...]
    path: str = Field(default="services.json", exclude=True)

    @model_validator(mode="after")
    def _unique(self) -> ServicesConfig:
        seen_names: set[str] = set()
        seen_ports: dict[int, str] = {}
        for svc in self.services:
            if svc.name in seen_names:
                raise ValueError(f"service name {svc.name!r} appears twice")
            seen_names.add(svc.name)
            for port in (svc.grpc.port, svc.health_port):
                if port is None:
                    continue
                if port in seen_ports:
                    raise ValueError(f"port {port} of {svc.name!r} is also {seen_ports[port]!r}'s")
                seen_ports[port] = svc.name
        return self

    def get(self, name: str) -> ServiceConfig:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise ConfigError(self.path, f"services[name={name}]", "no such service")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(svc.name for svc in self.services)

    def with_overrides(
        self, env: Mapping[str, str], flags: Mapping[str, Any] | None = None
    ) -> ServicesConfig:
        """Apply `VIRTUFIN_<SERVICE>_GRPC_HOST|GRPC_PORT` then flags `{"<svc>.grpc.port": …}`."""
        data = self.model_dump(by_alias=True)
        for entry in data["services"]:
            prefix = "VIRTUFIN_" + entry["name"].upper().replace("-", "_") + "_"
            for suffix, path in (("GRPC_HOST", ("grpc", "host")), ("GRPC_PORT", ("grpc", "port"))):
                if prefix + suffix in env:
                    entry[path[0]][path[1]] = env[prefix + suffix]
            for key, value in (flags or {}).items():
                name, _, rest = key.partition(".")
                if name == entry["name"] and rest:
                    *parents, leaf = rest.split(".")
                    target = entry
                    for parent in parents:
                        target = target[parent]
                    target[leaf] = value
        return _validate_services(data, self.path)


def _format_validation(exc: ValidationError) -> tuple[str, str]:
    fields, reasons = [], []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        fields.append(loc)
        msg = str(err["msg"])
        reasons.append(f"{loc}: {msg.removeprefix('Value error, ')}")
    return ", ".join(fields), "; ".join(reasons)


def _validate_services(data: Any, path: str) -> ServicesConfig:
    try:
        config = ServicesConfig.model_validate(data)
    except ValidationError as exc:
        field, reason = _format_validation(exc)
        raise ConfigError(path, field, reason) from None
    return config.model_copy(update={"path": path})


def load_services(path: str | Path | None = None) -> ServicesConfig:
    """Read and validate `services.json` (default: `$VIRTUFIN_SERVICES` or the project's)."""
    if path is None:
        path = os.environ.get("VIRTUFIN_SERVICES") or project_root() / "services.json"
    file = Path(path)
    try:
        raw = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), "", f"cannot be read ({exc.strerror})") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(str(file), f"line {exc.lineno} column {exc.colno}", exc.msg) from None
    return _validate_services(data, str(file))


# --------------------------------------------------------------------------- settings


class Settings(_Model):
    """What one Virtufin process runs on. Defaults need no server.

    Environment: `VIRTUFIN_BUS`, `VIRTUFIN_STATE`, `VIRTUFIN_NATS_URL`, `VIRTUFIN_POSTGRES_DSN`,
    `VIRTUFIN_REDIS_URL`, `VIRTUFIN_STATE_DIR`, `VIRTUFIN_API_KEYS` (comma-separated),
    `VIRTUFIN_DEPLOYMENT`, `VIRTUFIN_NATS_ORDERED_ACK_WAIT` (seconds an ordered subscription's
    event held by a dead member blocks its group, 5); Virtufin's own `pubsubName` and
    `stateStoreName` are read too.

    Example:
        >>> load_settings(env={"VIRTUFIN_BUS": "nats"}, flags={"state": "postgres"}).state
        'postgres'
    """

    deployment: Literal["local", "test", "production"] = "local"
    bus: BusKind = "memory"
    state: StateKind = "sqlite"
    nats_url: str = "nats://127.0.0.1:4222"
    nats_ordered_ack_wait: float = Field(default=5.0, gt=0)
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"
    state_dir: Path = Path(".virtufin")
    api_keys: tuple[str, ...] = ()
    pubsub_name: str = "pubsub"
    state_store_name: str = "statestore"


_ENV_SETTINGS: Final[dict[str, str]] = {
    "VIRTUFIN_DEPLOYMENT": "deployment",
    "VIRTUFIN_BUS": "bus",
    "VIRTUFIN_STATE": "state",
    "VIRTUFIN_NATS_URL": "nats_url",
    "VIRTUFIN_NATS_ORDERED_ACK_WAIT": "nats_ordered_ack_wait",
    "VIRTUFIN_POSTGRES_DSN": "postgres_dsn",
    "VIRTUFIN_REDIS_URL": "redis_url",
    "VIRTUFIN_STATE_DIR": "state_dir",
    "VIRTUFIN_API_KEYS": "api_keys",
    "pubsubName": "pubsub_name",
    "stateStoreName": "state_store_name",
}


def load_settings(
    *, env: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None
) -> Settings:
    """Defaults, then environment variables, then CLI flags (`None` flags are ignored).

    Raises:
        ConfigError: a value is not allowed; the message names the variable or flag.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for var, field in _ENV_SETTINGS.items():
        if var in env and env[var] != "":
            value: Any = env[var]
            if field == "api_keys":
                value = tuple(k.strip() for k in value.split(",") if k.strip())
            values[field] = value
            origin[field] = f"environment variable {var}"
    for field, value in (flags or {}).items():
        if value is None:
            continue
        if field not in Settings.model_fields:
            raise ConfigError("command line", f"--{field.replace('_', '-')}", "unknown option")
        values[field] = value
        origin[field] = f"flag --{field.replace('_', '-')}"
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        where = origin.get(field, field)
        raise ConfigError("settings", where, str(err["msg"])) from None
    if not settings.state_dir.is_absolute():
        settings = settings.model_copy(update={"state_dir": project_root() / settings.state_dir})
    return settings
