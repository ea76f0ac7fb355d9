"""A pre-trade notional limit: the Python twin of ``native/src/risk_limit.c``.

Each ``com.virtufin.trading.order.submitted`` is answered exactly once, with
``com.virtufin.trading.order.accepted`` (the order's data plus ``notional``) or
``com.virtufin.trading.order.rejected`` (plus ``reject_reason``). A venue deployed behind the
filter consumes ``order.accepted`` instead of ``order.submitted``. Bars update the reference
price (last close per symbol) used for market orders.
"""

from workers.risk_limit.worker import RiskLimit, RiskLimitConfig

__all__ = ["RiskLimit", "RiskLimitConfig"]
