"""SplitSettlement servicer: funders' settlements and statements for operators and finance (docs/SPLITS.md).

Reads need a viewer, a run an operator (gateway/api/access.py); a run is audited.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import grpc

from gateway import validation as v
from gateway.api.auth import current_identity
from gateway.api.convert import ts
from gateway.errors import InvalidInput
from gateway.operations import reason_text
from gateway.plans.ports import AuditLog
from gateway.plans.spec import due_date
from gateway.splits.funders import FUNDER_ID
from gateway.splits.settlement import SettlementService
from gateway.store.splits import SettlementRow
from paygate.v1 import splits_pb2, splits_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]

_STATUS = {
    "PAYING": splits_pb2.SETTLEMENT_PAYING,
    "PAID": splits_pb2.SETTLEMENT_PAID,
    "PAYOUT_FAILED": splits_pb2.SETTLEMENT_PAYOUT_FAILED,
    "REPORTED": splits_pb2.SETTLEMENT_REPORTED,
    "CARRIED": splits_pb2.SETTLEMENT_CARRIED,
}


def settlement_pb(row: SettlementRow) -> splits_pb2.Settlement:
    out = splits_pb2.Settlement(
        funder_id=row.funder_id,
        business_day=row.business_day.isoformat(),
        currency=row.currency,
        withheld=row.withheld,
        refunded=row.refunded,
        carried_in=row.carried_in,
        net=row.net,
        paid=row.paid,
        carried_out=row.carried_out,
        status=_STATUS.get(row.status, splits_pb2.SETTLEMENT_STATUS_UNSPECIFIED),
        payout_flow_no=row.payout_flow_no,
        payout_request_id=row.payout_request_id,
        orders=row.orders,
        refund_orders=row.refund_orders,
        payout_attempt=row.payout_attempt,
    )
    stamp = ts(row.created_at)
    if stamp is not None:
        out.created_at.CopyFrom(stamp)
    return out


def _funder_id(value: str, *, required: bool) -> str:
    return v.pattern(value, "funder_id", FUNDER_ID, "a funder id (a-z 0-9 . _ -)", required=required)


def resend_input(request: splits_pb2.ResendSettlementPayoutRequest) -> tuple[str, date, str]:
    """ResendSettlementPayout's (funder_id, business_day, reason), or InvalidInput naming the field."""
    funder_id = _funder_id(request.funder_id, required=True)
    day = due_date(request.business_day, "business_day")
    reason = reason_text(request.reason)
    return funder_id, day, reason


class SplitSettlementServicer(splits_pb2_grpc.SplitSettlementServicer):
    def __init__(self, settlement: SettlementService, audit: AuditLog) -> None:
        self.settlement = settlement
        self.audit = audit

    async def ListFunders(self, request: splits_pb2.ListFundersRequest, context: Ctx) -> splits_pb2.ListFundersResponse:
        return splits_pb2.ListFundersResponse(
            funders=[
                splits_pb2.Funder(
                    funder_id=f.funder_id,
                    name=f.config.name,
                    currency=f.config.currency,
                    settle_from=f.config.settle_from,
                    account_masked=f.account_masked,
                )
                for f in self.settlement.funders
            ]
        )

    async def ListSettlements(
        self, request: splits_pb2.ListSettlementsRequest, context: Ctx
    ) -> splits_pb2.ListSettlementsResponse:
        funder_id = _funder_id(request.funder_id, required=False)
        day: date | None = due_date(request.business_day, "business_day") if request.business_day else None
        if day is None and not funder_id:
            raise InvalidInput("business_day", "is required unless funder_id is given")
        rows = await self.settlement.settlements(
            day=day, funder_id=funder_id, limit=v.page_size(request.limit, "limit")
        )
        return splits_pb2.ListSettlementsResponse(settlements=[settlement_pb(r) for r in rows])

    async def GetStatement(self, request: splits_pb2.StatementRequest, context: Ctx) -> splits_pb2.StatementResponse:
        funder_id = _funder_id(request.funder_id, required=True)
        statement = await self.settlement.statement(funder_id, due_date(request.business_day, "business_day"))
        return splits_pb2.StatementResponse(
            filename=statement.filename, csv=statement.csv, settlement=settlement_pb(statement.settlement)
        )

    async def RunSettlement(
        self, request: splits_pb2.RunSettlementRequest, context: Ctx
    ) -> splits_pb2.ListSettlementsResponse:
        funder_id = _funder_id(request.funder_id, required=False)
        day = due_date(request.business_day, "business_day")
        reason = reason_text(request.reason)
        if funder_id:
            self.settlement.funder(funder_id)
        rows = await self.settlement.settle_through(day, funder_id)
        await self.audit.record(
            current_identity().name,
            "run_settlement",
            f"settlement:{funder_id or '*'}:{day.isoformat()}",
            reason,
            {"settlements": [f"{r.funder_id}:{r.status}:{r.paid}" for r in rows]},
        )
        return splits_pb2.ListSettlementsResponse(settlements=[settlement_pb(r) for r in rows])

    async def ResendSettlementPayout(
        self, request: splits_pb2.ResendSettlementPayoutRequest, context: Ctx
    ) -> splits_pb2.Settlement:
        funder_id, day, reason = resend_input(request)
        row = await self.settlement.resend(funder_id, day, operator=current_identity().name, reason=reason)
        return settlement_pb(row)
