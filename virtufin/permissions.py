"""Lane permissions: who may publish where, enforced by the broker (NATS subject permissions).

Virtufin's rule: only connectors publish ``act.exchange.>``, only backtest engines publish
``hyp.*.exchange.>``, only production roles write ``sc.LIVE.>``. Each service's allow lists come
from its `publishes`/`subscribes` in `services.json`; the role adds deny lists so that a broad
pattern (``sc.*.trading.>``) can never reach a protected lane. The rendered file is a
nats-server ``authorization`` block; passwords are nats-server environment references
(``$VIRTUFIN_<SERVICE>_NATS_PASSWORD``), never literals.

Example:
    >>> rules = service_permissions(load_services().get("marketdata"))   # doctest: +SKIP
    >>> "act.exchange.>" in rules.publish_allow                         # doctest: +SKIP
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from virtufin.config import ServiceConfig, ServicesConfig
from virtufin.errors import ConfigError

__all__ = [
    "JETSTREAM_CLIENT_SUBJECTS",
    "PROTECTED_LANES",
    "Permissions",
    "password_variable",
    "render_nats_authorization",
    "service_permissions",
]

#: Protected lane → the roles that may publish on it.
PROTECTED_LANES: Final[dict[str, frozenset[str]]] = {
    "act.exchange.>": frozenset({"connector"}),
    "hyp.*.exchange.>": frozenset({"backtest"}),
    "sc.LIVE.>": frozenset({"production", "gateway"}),
}
#: What every JetStream client needs besides its lanes (API calls, acks, reply inboxes).
JETSTREAM_CLIENT_SUBJECTS: Final = ("$JS.API.>", "$JS.ACK.>", "_INBOX.>")


@dataclass(frozen=True, slots=True)
class Permissions:
    """The subject permissions of one service's broker user."""

    user: str
    publish_allow: tuple[str, ...]
    publish_deny: tuple[str, ...]
    subscribe_allow: tuple[str, ...]


def _overlaps(pattern: str, protected: str) -> bool:
    """Whether some concrete subject matches both patterns (token-wise NATS semantics)."""
    a, b = pattern.split("."), protected.split(".")
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == ">" or y == ">":
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != "*" and y != "*" and x != y:
            return False
    return True


def _within(pattern: str, lane: str) -> bool:
    """Whether every subject `pattern` matches also matches `lane`."""
    p, q = pattern.split("."), lane.split(".")
    for i, token in enumerate(q):
        if token == ">":
            return len(p) > i
        if i >= len(p) or p[i] == ">":
            return False
        if token != "*" and (p[i] == "*" or p[i] != token):
            return False
    return len(p) == len(q)


def password_variable(service: str) -> str:
    """The environment variable nats-server reads the service's password from."""
    return f"VIRTUFIN_{service.upper().replace('-', '_')}_NATS_PASSWORD"


def service_permissions(service: ServiceConfig) -> Permissions:
    """Allow what the service declares; deny the protected lanes its role may not write.

    Raises:
        ConfigError: a declared publish pattern lies inside a lane the role may not write
            (e.g. a connector declaring ``sc.LIVE.>``).
    """
    deny: list[str] = []
    for lane, roles in PROTECTED_LANES.items():
        if service.role in roles:
            continue
        for pattern in service.publishes:
            if _within(pattern, lane):
                raise ConfigError(
                    "services.json",
                    f"services[name={service.name}].publishes",
                    f"{pattern!r} lies in {lane!r}, which role {service.role!r} may not publish",
                )
        if any(_overlaps(pattern, lane) for pattern in service.publishes):
            deny.append(lane)
    return Permissions(
        user=service.name,
        publish_allow=(*service.publishes, *JETSTREAM_CLIENT_SUBJECTS),
        publish_deny=tuple(deny),
        subscribe_allow=(*service.subscribes, *JETSTREAM_CLIENT_SUBJECTS),
    )


def _list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def render_nats_authorization(services: ServicesConfig) -> str:
    """The nats-server ``authorization { users = [...] }`` block for every service."""
    lines = [
        "# Generated from services.json by `virtufin deploy render`; do not edit.",
        "# Lane permissions: only connectors publish act.exchange.>, only backtest engines",
        "# publish hyp.*.exchange.>, only production roles write sc.LIVE.>.",
        "authorization {",
        "  users = [",
    ]
    for service in services.services:
        perms = service_permissions(service)
        publish = f"allow: {_list(perms.publish_allow)}"
        if perms.publish_deny:
            publish += f", deny: {_list(perms.publish_deny)}"
        lines += [
            "    {",
            f'      user: "{perms.user}"',
            f"      password: ${password_variable(service.name)}",
            "      permissions: {",
            f"        publish: {{ {publish} }}",
            f"        subscribe: {{ allow: {_list(perms.subscribe_allow)} }}",
            "      }",
            "    }",
        ]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)
