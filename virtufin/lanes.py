"""Lanes and topic strings: parse, validate, format, re-address and match.

The four topic families (docs/spec/lanes-and-topics.md):

- live market data      ``act.exchange.<venue>.<entity>.<event>[.<qualifier>…]``
- replayed market data  ``hyp.<selector>.exchange.<venue>.<entity>.<event>[.<qualifier>…]``
- scenario events       ``sc.<scenarioId>.<domain>.<entity>.<event>[.<id>…]``
- infrastructure        ``<service>.<category>[.<sub>…]`` and the gateway's ``state-changes``

Topics map 1:1 onto NATS subjects, so patterns use NATS wildcards: ``*`` one token,
``>`` one or more trailing tokens.

Example:
    >>> t = parse("act.exchange.binance.trade.tape.BTCUSDT")
    >>> format_topic(to_backtest(t, "FTX_2022"))
    'hyp.FTX_2022.exchange.binance.trade.tape.BTCUSDT'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache
from typing import Final

from virtufin.errors import TopicError

__all__ = [
    "ID_RE",
    "INFRA_CATEGORIES",
    "LIVE",
    "Family",
    "Lane",
    "Topic",
    "format_topic",
    "is_valid_id",
    "matches",
    "overlaps",
    "parse",
    "to_backtest",
    "to_live",
    "to_live_scenario",
    "to_scenario",
    "validate_id",
    "validate_pattern",
]

LIVE: Final = "LIVE"
ID_RE: Final = re.compile(r"^[A-Z0-9_]{1,32}$")
_TOKEN_RE: Final = re.compile(r"^[A-Za-z0-9_\-:]+$")
_SERVICE_RE: Final = re.compile(r"^[a-z][a-z0-9\-]*$")
INFRA_CATEGORIES: Final = frozenset(
    {"lifecycle", "infra", "audit", "command", "response", "deadletter"}
)
_SINGLE_TOKEN_TOPICS: Final = frozenset({"state-changes"})
_MAX_QUALIFIERS: Final = 3


class Lane(StrEnum):
    """Market, portfolio and strategy lanes: the real world or a hypothetical one."""

    ACT = "act"
    HYP = "hyp"


class Family(StrEnum):
    """The four topic families."""

    ACT = "act"
    HYP = "hyp"
    SCENARIO = "sc"
    INFRA = "infra"


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic. `path` is everything after the family prefix (and selector or id).

    For act/hyp, `path` starts with ``exchange``; for sc, with the domain; for infra, with
    the category.
    """

    family: Family
    path: tuple[str, ...]
    selector: str | None = None
    scenario_id: str | None = None
    service: str | None = None

    def __str__(self) -> str:
        return format_topic(self)

    @property
    def venue(self) -> str | None:
        return self.path[1] if self.family in (Family.ACT, Family.HYP) else None


def is_valid_id(value: str) -> bool:
    """Whether `value` is a legal selector or scenario id (``^[A-Z0-9_]{1,32}$``)."""
    return ID_RE.match(value) is not None


def validate_id(value: str, *, what: str = "scenario id") -> str:
    """Return `value` if it is a legal selector/scenario id, else raise `TopicError`."""
    if not is_valid_id(value):
        raise TopicError(value, f"{what} must match ^[A-Z0-9_]{{1,32}}$")
    return value


def _check_tokens(topic: str, tokens: list[str]) -> None:
    for token in tokens:
        if not token:
            raise TopicError(topic, "empty token (leading, trailing or doubled '.')")
        if not _TOKEN_RE.match(token):
            raise TopicError(topic, f"token {token!r} may hold only letters, digits, _ - :")


def _check_tail(topic: str, tail: list[str], *, names: str) -> None:
    if len(tail) < 3:
        raise TopicError(topic, f"expected {names} after the prefix")
    if len(tail) > 3 + _MAX_QUALIFIERS:
        raise TopicError(topic, f"at most {_MAX_QUALIFIERS} trailing id/qualifier tokens")


@lru_cache(maxsize=4096)
def parse(topic: str) -> Topic:
    """Parse and validate a concrete topic (no wildcards).

    Raises:
        TopicError: with Virtufin's messages, e.g. ``act topics MUST NOT carry a selector``.
    """
    if not topic:
        raise TopicError(topic, "is empty")
    if topic in _SINGLE_TOKEN_TOPICS:
        return Topic(Family.INFRA, (), service=topic)
    tokens = topic.split(".")
    if any(t in ("*", ">") for t in tokens):
        raise TopicError(topic, "wildcards are allowed in subscriptions only")
    _check_tokens(topic, tokens)
    head = tokens[0]
    if head == "act":
        if len(tokens) > 1 and tokens[1] != "exchange":
            if is_valid_id(tokens[1]):
                raise TopicError(topic, "act topics MUST NOT carry a selector")
            raise TopicError(topic, "act topics continue with 'exchange'")
        _check_tail(topic, tokens[2:], names="<venue>.<entity>.<event>")
        return Topic(Family.ACT, tuple(tokens[1:]))
    if head == "hyp":
        if len(tokens) < 2 or tokens[1] == "exchange":
            raise TopicError(topic, "hyp topics MUST carry a selector")
        _validate_id_in(topic, tokens[1], "selector")
        if len(tokens) < 3 or tokens[2] != "exchange":
            raise TopicError(topic, "hyp topics continue with '<selector>.exchange'")
        _check_tail(topic, tokens[3:], names="<venue>.<entity>.<event>")
        return Topic(Family.HYP, tuple(tokens[2:]), selector=tokens[1])
    if head == "sc":
        if len(tokens) < 2:
            raise TopicError(topic, "sc topics carry a scenario id")
        _validate_id_in(topic, tokens[1], "scenario id")
        _check_tail(topic, tokens[2:], names="<domain>.<entity>.<event>")
        return Topic(Family.SCENARIO, tuple(tokens[2:]), scenario_id=tokens[1])
    if not _SERVICE_RE.match(head):
        raise TopicError(topic, "infrastructure topics start with a lower-case service name")
    if len(tokens) < 2 or tokens[1] not in INFRA_CATEGORIES:
        cats = "|".join(sorted(INFRA_CATEGORIES))
        raise TopicError(topic, f"infrastructure topics are <service>.<{cats}>[.<sub>…]")
    return Topic(Family.INFRA, tuple(tokens[1:]), service=head)


def _validate_id_in(topic: str, value: str, what: str) -> None:
    if not is_valid_id(value):
        raise TopicError(topic, f"{what} {value!r} must match ^[A-Z0-9_]{{1,32}}$")


def format_topic(topic: Topic) -> str:
    """The topic string of a parsed `Topic` (inverse of `parse`)."""
    rest = ".".join(topic.path)
    if topic.family is Family.ACT:
        return f"act.{rest}"
    if topic.family is Family.HYP:
        return f"hyp.{topic.selector}.{rest}"
    if topic.family is Family.SCENARIO:
        return f"sc.{topic.scenario_id}.{rest}"
    return f"{topic.service}.{rest}" if rest else str(topic.service)


def to_backtest(topic: Topic, selector: str) -> Topic:
    """Re-address live market data onto the replay lane of data universe `selector`."""
    if topic.family is not Family.ACT:
        raise TopicError(format_topic(topic), "only act topics move to a hyp lane")
    validate_id(selector, what="selector")
    return Topic(Family.HYP, topic.path, selector=selector)


def to_live(topic: Topic) -> Topic:
    """Re-address replayed market data back onto the live lane (drops the selector)."""
    if topic.family is not Family.HYP:
        raise TopicError(format_topic(topic), "only hyp topics move to the act lane")
    return Topic(Family.ACT, topic.path)


def to_scenario(topic: Topic, scenario_id: str) -> Topic:
    """Re-address a `sc.LIVE.*` topic to scenario `scenario_id`."""
    if topic.family is not Family.SCENARIO or topic.scenario_id != LIVE:
        raise TopicError(format_topic(topic), "only sc.LIVE topics move to a scenario")
    validate_id(scenario_id)
    if scenario_id == LIVE:
        raise TopicError(format_topic(topic), "the target scenario must not be LIVE")
    return replace(topic, scenario_id=scenario_id)


def to_live_scenario(topic: Topic) -> Topic:
    """Re-address a `sc.<id>.*` topic to production (`sc.LIVE.*`)."""
    if topic.family is not Family.SCENARIO:
        raise TopicError(format_topic(topic), "only sc topics move to sc.LIVE")
    return replace(topic, scenario_id=LIVE)


def validate_pattern(pattern: str) -> str:
    """Validate a subscription pattern: concrete tokens, ``*`` tokens, a final ``>``."""
    if not pattern:
        raise TopicError(pattern, "is empty")
    tokens = pattern.split(".")
    for i, token in enumerate(tokens):
        if token == ">":
            if i != len(tokens) - 1:
                raise TopicError(pattern, "'>' must be the last token")
        elif token != "*" and (not token or not _TOKEN_RE.match(token)):
            raise TopicError(pattern, f"token {token!r} is neither a name nor a wildcard")
    return pattern


@lru_cache(maxsize=8192)
def matches(pattern: str, topic: str) -> bool:
    """NATS subject matching: ``*`` matches one token, a final ``>`` one or more."""
    p_tokens = pattern.split(".")
    t_tokens = topic.split(".")
    for i, p in enumerate(p_tokens):
        if p == ">":
            return len(t_tokens) > i
        if i >= len(t_tokens):
            return False
        if p != "*" and p != t_tokens[i]:
            return False
    return len(p_tokens) == len(t_tokens)


def overlaps(first: str, second: str) -> bool:
    """Whether some topic matches both patterns (NATS wildcards in either): a bus can tell
    whether anybody could receive what a publisher of `second` sends.

    Example:
        >>> overlaps("sc.>", "sc.BT_1.trading.order.*"), overlaps("hyp.>", "sc.>")
        (True, False)
    """
    a, b = first.split("."), second.split(".")
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == ">":
            return y is not None
        if y == ">":
            return x is not None
        if x is None or y is None:
            return False
        if x != "*" and y != "*" and x != y:
            return False
    return True
