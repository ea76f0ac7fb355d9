"""Market-data connectors: venue WebSockets and dataset replays publishing ``act.exchange…``.

Core code (no gRPC): the marketdata service (`services.marketdata`) wraps these as Virtufin's
``MarketData`` RPCs; tests and scripts use them directly.

- `ConnectionManager` / `WebSocketConnection`: sockets with reconnect and backoff, correlated
  sends, re-subscription after a reconnect, publishing of normalised frames;
- `BinanceNormalizer` (`normalizer_for`): Binance-style ``@trade``, ``@depthUpdate`` and
  ``@kline`` frames → Virtufin's ``trade.tape``, ``orderbook.update`` and ``ohlcv.candle``
  payloads;
- `Replay` / `ReplayManager`: the hive Parquet dataset as bar events at a chosen speed.
"""

from virtufin.marketdata.connectors.normalize import (
    BinanceNormalizer,
    MarketEvent,
    NormalizeError,
    Normalizer,
    normalizer_for,
)
from virtufin.marketdata.connectors.replay import Replay, ReplayManager, ReplayStatus
from virtufin.marketdata.connectors.websocket import (
    Backoff,
    ConnectionManager,
    ConnectionStatus,
    WebSocketConnection,
    WebSocketError,
)

__all__ = [
    "Backoff",
    "BinanceNormalizer",
    "ConnectionManager",
    "ConnectionStatus",
    "MarketEvent",
    "NormalizeError",
    "Normalizer",
    "Replay",
    "ReplayManager",
    "ReplayStatus",
    "WebSocketConnection",
    "WebSocketError",
    "normalizer_for",
]
