"""The ``virtufin.Execution`` RPCs: positions, orders and risk limits of a scenario.

Reads come from state (the venue persists after every change), so every replica and every
restart answers alike; ``unrealized_pnl`` uses this instance's last prices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import grpc

from services.bootstrap.errors import RpcError
from services.execution.executor import PaperExecution
from services.execution.risk import RiskLimits
from virtufin import statekeys
from virtufin.envelope import parse_time
from virtufin.errors import EnvelopeError
from virtufin.lanes import is_valid_id
from virtufin.proto import ensure_built

ensure_built()
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402

from virtufin.proto.gen import execution_pb2, execution_pb2_grpc  # noqa: E402

__all__ = ["ExecutionServicer"]

_SIDES: Final = {"buy": execution_pb2.ORDER_SIDE_BUY, "sell": execution_pb2.ORDER_SIDE_SELL}
_TYPES: Final = {"market": execution_pb2.ORDER_TYPE_MARKET, "limit": execution_pb2.ORDER_TYPE_LIMIT}
_STATUSES: Final = {
    "submitted": execution_pb2.ORDER_STATUS_SUBMITTED,
    "accepted": execution_pb2.ORDER_STATUS_ACCEPTED,
    "partially_filled": execution_pb2.ORDER_STATUS_PARTIALLY_FILLED,
    "filled": execution_pb2.ORDER_STATUS_FILLED,
    "cleared": execution_pb2.ORDER_STATUS_CLEARED,
    "settled": execution_pb2.ORDER_STATUS_SETTLED,
    "rejected": execution_pb2.ORDER_STATUS_REJECTED,
    "amended": execution_pb2.ORDER_STATUS_AMENDED,
    "cancelled": execution_pb2.ORDER_STATUS_CANCELLED,
    "expired": execution_pb2.ORDER_STATUS_EXPIRED,
}


def _invalid(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _scenario(raw: str) -> str:
    sid = raw.strip()
    if not sid:
        raise _invalid("scenario_id is required (LIVE or a registered scenario)")
    if not is_valid_id(sid):
        raise _invalid(f"scenario_id {sid[:40]!r} must match ^[A-Z0-9_]{{1,32}}$")
    return sid


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _stamp(value: Any) -> Timestamp | None:
    if not isinstance(value, str):
        return None
    try:
        when: datetime = parse_time(value)
    except EnvelopeError:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _limits(limits: RiskLimits) -> execution_pb2.RiskLimits:
    return execution_pb2.RiskLimits(
        scenario_id=limits.scenario_id,
        max_notional=limits.max_notional,
        max_position=limits.max_position,
    )


class ExecutionServicer(execution_pb2_grpc.ExecutionServicer):  # type: ignore[misc]
    """Implements ``virtufin.Execution`` over `PaperExecution` and its state."""

    def __init__(self, execution: PaperExecution) -> None:
        self._execution = execution

    async def _values(self, prefix: str) -> list[tuple[str, Mapping[str, Any]]]:
        store = self._execution.store
        keys = await store.keys(prefix)
        items = await store.get_bulk(keys)
        return [
            (key, items[key].value)
            for key in keys
            if key in items and isinstance(items[key].value, Mapping)
        ]

    async def GetPositions(
        self, request: execution_pb2.GetPositionsRequest, context: grpc.aio.ServicerContext
    ) -> execution_pb2.GetPositionsResponse:
        sid = _scenario(request.scenario_id)
        portfolio = statekeys.portfolio(sid)
        positions = []
        for key, value in await self._values(statekeys.position(sid, "")):
            if key == portfolio:
                continue
            symbol = str(value.get("symbol") or key.rsplit(".", 1)[-1])
            size, avg = _float(value.get("size")), _float(value.get("avg_price"))
            mark = self._execution.market.price(symbol)
            unrealized = (mark - avg) * size if mark is not None and size and avg else 0.0
            positions.append(
                execution_pb2.Position(
                    symbol=symbol,
                    size=size,
                    avg_price=avg,
                    realized_pnl=_float(value.get("realized_pnl")),
                    unrealized_pnl=unrealized,
                    updated_at=_stamp(value.get("updated_at")),
                )
            )
        return execution_pb2.GetPositionsResponse(positions=positions)

    async def GetOrders(
        self, request: execution_pb2.GetOrdersRequest, context: grpc.aio.ServicerContext
    ) -> execution_pb2.GetOrdersResponse:
        sid = _scenario(request.scenario_id)
        wanted = set(request.statuses)
        orders = []
        for _, value in await self._values(statekeys.order(sid, "")):
            status = _STATUSES.get(str(value.get("status")), execution_pb2.ORDER_STATUS_UNSPECIFIED)
            if wanted and status not in wanted:
                continue
            orders.append(
                execution_pb2.Order(
                    id=str(value.get("order_id", "")),
                    symbol=str(value.get("symbol") or ""),
                    side=_SIDES.get(str(value.get("side")), execution_pb2.ORDER_SIDE_UNSPECIFIED),
                    type=_TYPES.get(str(value.get("type")), execution_pb2.ORDER_TYPE_UNSPECIFIED),
                    qty=_float(value.get("qty")),
                    remaining_qty=_float(value.get("remaining_qty")),
                    price=_float(value.get("limit_price")),
                    avg_price=_float(value.get("avg_price")),
                    status=status,
                    venue=str(value.get("venue") or ""),
                    created_at=_stamp(value.get("created_at")),
                    updated_at=_stamp(value.get("updated_at")),
                    reject_reason=str(value.get("reject_reason") or ""),
                )
            )
        orders.sort(key=lambda o: (o.created_at.ToMicroseconds(), o.id))
        return execution_pb2.GetOrdersResponse(orders=orders)

    async def SetRiskLimits(
        self, request: execution_pb2.SetRiskLimitsRequest, context: grpc.aio.ServicerContext
    ) -> execution_pb2.SetRiskLimitsResponse:
        sid = _scenario(request.scenario_id)
        for name in ("max_notional", "max_position"):
            value = getattr(request, name)
            if not math.isfinite(value) or value < 0:
                raise _invalid(f"{name} must be a finite number ≥ 0 (0 = no limit), not {value}")
        limits = await self._execution.set_limits(
            RiskLimits(sid, request.max_notional, request.max_position)
        )
        return execution_pb2.SetRiskLimitsResponse(limits=_limits(limits))

    async def GetRiskLimits(
        self, request: execution_pb2.GetRiskLimitsRequest, context: grpc.aio.ServicerContext
    ) -> execution_pb2.GetRiskLimitsResponse:
        sid = _scenario(request.scenario_id)
        return execution_pb2.GetRiskLimitsResponse(
            limits=_limits(await self._execution.get_limits(sid))
        )
