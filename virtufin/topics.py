"""The topic registry: every topic name and event type Virtufin uses is built here.

No other module writes a topic string by hand; services, workers and pipelines call these
builders, so a rename is one edit. Builders validate what they build (`virtufin.lanes.parse`).

Example:
    >>> order_event("LIVE", "submitted", "o-1")
    'sc.LIVE.trading.order.submitted.o-1'
    >>> bar("binance", "BTCUSDT", interval="1d", selector="FTX_2022")
    'hyp.FTX_2022.exchange.binance.ohlcv.candle.1d.BTCUSDT'
"""

from __future__ import annotations

from typing import Final

from virtufin.lanes import parse

__all__ = [
    "DEAD_LETTER",
    "EXECUTION_LIFECYCLE",
    "GATEWAY_LIFECYCLE",
    "MARKETDATA_LIFECYCLE",
    "PROMOTION_AUDIT",
    "STATE_CHANGES",
    "WORKMANAGER_INFRA_WORKER",
    "WORKMANAGER_LIFECYCLE",
    "EventTypes",
    "bar",
    "infra",
    "market_data",
    "order_event",
    "pnl_event",
    "position_event",
    "risk_event",
    "scenario_topic",
    "source_urn",
    "trade_event",
]

STATE_CHANGES: Final = "state-changes"
DEAD_LETTER: Final = "bus.deadletter"
WORKMANAGER_LIFECYCLE: Final = "workmanager.lifecycle"
WORKMANAGER_INFRA_WORKER: Final = "workmanager.infra.worker"
MARKETDATA_LIFECYCLE: Final = "marketdata.lifecycle"
EXECUTION_LIFECYCLE: Final = "execution.lifecycle"
GATEWAY_LIFECYCLE: Final = "gateway.lifecycle"
PROMOTION_AUDIT: Final = "promotion.audit"


def _checked(topic: str) -> str:
    parse(topic)
    return topic


def market_data(
    venue: str, entity: str, event: str, *qualifiers: str, selector: str | None = None
) -> str:
    """``act.exchange.<venue>.<entity>.<event>[.<q>…]``, or the ``hyp.<selector>`` twin."""
    rest = ".".join(("exchange", venue, entity, event, *qualifiers))
    return _checked(f"hyp.{selector}.{rest}" if selector is not None else f"act.{rest}")


def bar(venue: str, symbol: str, *, interval: str = "1d", selector: str | None = None) -> str:
    """An OHLCV candle: ``…exchange.<venue>.ohlcv.candle.<interval>.<symbol>``."""
    return market_data(venue, "ohlcv", "candle", interval, symbol, selector=selector)


def scenario_topic(scenario_id: str, domain: str, entity: str, event: str, *ids: str) -> str:
    """``sc.<sid>.<domain>.<entity>.<event>[.<id>…]``."""
    return _checked(".".join(("sc", scenario_id, domain, entity, event, *ids)))


def order_event(scenario_id: str, event: str, order_id: str | None = None) -> str:
    """``sc.<sid>.trading.order.<event>[.<id>]`` (submitted, accepted, filled, …)."""
    ids = (order_id,) if order_id is not None else ()
    return scenario_topic(scenario_id, "trading", "order", event, *ids)


def trade_event(scenario_id: str, event: str, trade_id: str | None = None) -> str:
    """``sc.<sid>.trading.trade.<event>[.<id>]``."""
    ids = (trade_id,) if trade_id is not None else ()
    return scenario_topic(scenario_id, "trading", "trade", event, *ids)


def position_event(scenario_id: str, symbol: str, event: str) -> str:
    """``sc.<sid>.position.<symbol>.<event>``; use symbol ``portfolio`` for the portfolio."""
    return scenario_topic(scenario_id, "position", symbol, event)


def pnl_event(scenario_id: str, metric: str, event: str = "update") -> str:
    """``sc.<sid>.pnl.<metric>.<event>`` (realized, unrealized)."""
    return scenario_topic(scenario_id, "pnl", metric, event)


def risk_event(scenario_id: str, metric: str, event: str) -> str:
    """``sc.<sid>.risk.<metric>.<event>`` (exposure.update, limit.breach, …)."""
    return scenario_topic(scenario_id, "risk", metric, event)


def infra(service: str, category: str, *sub: str) -> str:
    """``<service>.<category>[.<sub>…]``."""
    return _checked(".".join((service, category, *sub)))


def source_urn(service: str) -> str:
    """The stable CloudEvents ``source`` of a service: ``urn:com.virtufin.<service>``."""
    return f"urn:com.virtufin.{service}"


class EventTypes:
    """CloudEvents ``type`` values (``com.virtufin.…``)."""

    PREFIX: Final = "com.virtufin"

    @staticmethod
    def market(venue: str, entity: str, event: str) -> str:
        return f"com.virtufin.exchange.{venue}.{entity}.{event}"

    @staticmethod
    def order(event: str) -> str:
        return f"com.virtufin.trading.order.{event}"

    @staticmethod
    def trade(event: str) -> str:
        return f"com.virtufin.trading.trade.{event}"

    @staticmethod
    def position(event: str) -> str:
        return f"com.virtufin.position.{event}"

    @staticmethod
    def pnl(event: str) -> str:
        return f"com.virtufin.pnl.{event}"

    @staticmethod
    def risk(event: str) -> str:
        return f"com.virtufin.risk.{event}"

    @staticmethod
    def service(service: str, category: str, event: str) -> str:
        return f"com.virtufin.{service}.{category}.{event}"

    DEAD_LETTER: Final = "com.virtufin.bus.deadletter"
    STATE_CHANGE: Final = "com.virtufin.gateway.state.changed"
