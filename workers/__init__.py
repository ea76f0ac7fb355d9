"""Worker code: the DevKit (`workers.kit`) and the bundled workers.

Bundled workers (each with a ``manifest.json``):

- `workers.sma_cross`: backtesting.py's SMA-crossover example as a class worker and as a
  ``text/x-python`` script (its C twin is ``native/src/sma_cross.c``).
- `workers.risk_limit`: a pre-trade notional limit (C twin ``native/src/risk_limit.c``).
- `workers.echo`: a command worker that answers ``echo``, ``ping`` and ``status``.

Workers import only `workers.kit` and `virtufin`'s core contracts, never services or pipelines,
so the same worker runs in a backtest and live.
"""

__all__: list[str] = []
