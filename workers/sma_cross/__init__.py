"""backtesting.py's SMA-crossover example as a Virtufin worker, three ways.

- `SmaCross` (``worker.py``, ``manifest.json``): a class worker, in process;
- ``script.py`` (``script.manifest.json``): the same as a ``text/x-python`` script;
- ``native/src/sma_cross.c``: the same in C (``native/build/libsma_cross.so``).

All three make identical decisions, each symbol on its own window: once the fast and slow simple
moving averages of a symbol's closes exist on its previous and current bar,
``fast[-2] < slow[-2] and fast[-1] > slow[-1]`` (backtesting.py's ``crossover``) emits a buy,
the mirror image a sell; each order is
``sizing="all_in", exclusive=true``, so the position reverses.
"""

from workers.sma_cross.worker import SmaCross, SmaCrossConfig

__all__ = ["SmaCross", "SmaCrossConfig"]
