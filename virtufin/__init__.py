"""Virtufin: one event contract (CloudEvents on pub/sub lanes) for backtest and live trading.

Core contracts live here and import no framework: `lanes` and `topics` (topic strings),
`envelope` (CloudEvents), `config`, `statekeys`, `scenarios`, and the `bus` and `state` ports.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
