"""PaymentGateway servicer: validates every field, then calls the use cases.

Validation happens before anything is written; a bad field becomes
INVALID_ARGUMENT naming it. The caller identity comes from the auth
interceptor; every read and write is scoped to it. The flow RPCs hand the use
cases the RPC's remaining deadline (``context.time_remaining()``), which cuts
their wait budget.
"""

from __future__ import annotations

from typing import Any

import grpc

from gateway import validation as v
from gateway.agreements import AgreementService, SignParams
from gateway.api.auth import current_identity
from gateway.api.convert import CASHIER_KIND_OF_PB, agreement_pb, collection_pb, flow_pb
from gateway.collections import Collection, CollectionService, CollectParams
from gateway.domain import FlowKind
from gateway.errors import InvalidInput
from gateway.flows import FlowService
from gateway.splits.requests import shares_from_pb
from paygate.v1 import gateway_pb2, gateway_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]


def _wait_s(wait_ms: int, default_ms: int, max_ms: int) -> float:
    return v.wait_ms(wait_ms, default_ms, max_ms) / 1000.0


_page_token = v.page_token
_next_token = v.next_page_token


def _collection_pb(collection: Collection) -> gateway_pb2.Flow:
    return collection_pb(collection.flow, collection.row, collection.cashier)


class PaymentGatewayServicer(gateway_pb2_grpc.PaymentGatewayServicer):
    def __init__(
        self,
        flows: FlowService,
        agreements: AgreementService,
        default_wait_ms: int,
        max_wait_ms: int,
        collections: CollectionService | None = None,
        *,
        banks: frozenset[str] = v.MAINLAND_BANK_CODES,
    ) -> None:
        self.flows = flows
        self.agreements = agreements
        self.default_wait_ms = default_wait_ms
        self.max_wait_ms = max_wait_ms
        self.collections = collections
        self.banks = banks  # the bank codes requests may name (gateway/validation.py accepted_banks)

    def _bank(self, value: str) -> str:
        return v.bank_code(value, self.banks)

    async def Withhold(self, request: gateway_pb2.WithholdRequest, context: Ctx) -> gateway_pb2.Flow:
        request_id = v.request_id(request.request_id)
        amount, currency = v.money(request.amount.amount, request.amount.currency, present=request.HasField("amount"))
        params = v.WithholdParams(
            amount=amount,
            currency=currency,
            account_no=v.card_no(request.account_no),
            bank_code=self._bank(request.bank_code),
            agreement_no=v.pattern(
                request.agreement_no, "agreement_no", v.FLOW_NO, "a 26-character agreement number", required=False
            ),
            description=v.text(request.description, "description", max_len=128),
            shares=shares_from_pb(request.shares, amount),
        )
        wait = _wait_s(request.wait_ms, self.default_wait_ms, self.max_wait_ms)
        flow = await self.flows.withhold(
            current_identity().name, request_id, params, wait, deadline_s=context.time_remaining()
        )
        return flow_pb(flow)

    async def Payout(self, request: gateway_pb2.PayoutRequest, context: Ctx) -> gateway_pb2.Flow:
        request_id = v.request_id(request.request_id)
        amount, currency = v.money(request.amount.amount, request.amount.currency, present=request.HasField("amount"))
        params = v.PayoutParams(
            amount=amount,
            currency=currency,
            account_no=v.pattern(request.account_no, "account_no", v.ACCOUNT_NO, "8-32 digits"),
            account_name=v.text(request.account_name, "account_name", max_len=64, required=True),
            bank_code=self._bank(request.bank_code),
            description=v.text(request.description, "description", max_len=128),
        )
        wait = _wait_s(request.wait_ms, self.default_wait_ms, self.max_wait_ms)
        flow = await self.flows.payout(
            current_identity().name, request_id, params, wait, deadline_s=context.time_remaining()
        )
        return flow_pb(flow)

    async def Refund(self, request: gateway_pb2.RefundRequest, context: Ctx) -> gateway_pb2.Flow:
        request_id = v.request_id(request.request_id)
        amount, currency = v.money(request.amount.amount, request.amount.currency, present=request.HasField("amount"))
        params = v.RefundParams(
            original_flow_no=v.pattern(
                request.original_flow_no, "original_flow_no", v.FLOW_NO, "a 26-character flow_no"
            ),
            amount=amount,
            currency=currency,
            reason=v.text(request.reason, "reason", max_len=128),
        )
        wait = _wait_s(request.wait_ms, self.default_wait_ms, self.max_wait_ms)
        flow = await self.flows.refund(
            current_identity().name, request_id, params, wait, deadline_s=context.time_remaining()
        )
        return flow_pb(flow)

    async def CreateCollection(self, request: gateway_pb2.CreateCollectionRequest, context: Ctx) -> gateway_pb2.Flow:
        collections = self._collections()
        config = collections.config
        request_id = v.request_id(request.request_id)
        amount, currency = v.money(request.amount.amount, request.amount.currency, present=request.HasField("amount"))
        kind = CASHIER_KIND_OF_PB.get(request.cashier)
        if kind is None:
            raise InvalidInput("cashier", "must be CASHIER_QR, CASHIER_H5 or CASHIER_IN_APP")
        v.expiry_s(request.expires_in_s, config.default_expiry_s, config.min_expiry_s, config.max_expiry_s)
        params = CollectParams(
            amount=amount,
            currency=currency,
            cashier=kind.value,
            expires_in_s=request.expires_in_s,  # as asked (0: the default), so a replay hashes the same
            channel=v.pattern(request.channel, "channel", v.CHANNEL_ID, "a configured channel id", required=False),
            description=v.text(request.description, "description", max_len=128),
            openid=v.pattern(request.payer.openid, "payer.openid", v.OPENID, "a WeChat openid", required=False),
            client_ip=v.client_ip(request.payer.client_ip),
            return_url=v.pattern(
                request.payer.return_url, "payer.return_url", v.RETURN_URL, "an http(s) URL", required=False
            ),
        )
        wait = _wait_s(request.wait_ms, self.default_wait_ms, self.max_wait_ms)
        collection = await collections.create(
            current_identity().name, request_id, params, wait, deadline_s=context.time_remaining()
        )
        return _collection_pb(collection)

    async def CloseCollection(self, request: gateway_pb2.CloseCollectionRequest, context: Ctx) -> gateway_pb2.Flow:
        flow_no = v.pattern(request.flow_no, "flow_no", v.FLOW_NO, "a 26-character flow_no")
        return _collection_pb(await self._collections().close(current_identity().name, flow_no))

    def _collections(self) -> CollectionService:
        if self.collections is None:  # pragma: no cover - the composition root always wires it
            raise InvalidInput("cashier", "collections are not configured")
        return self.collections

    async def GetFlow(self, request: gateway_pb2.GetFlowRequest, context: Ctx) -> gateway_pb2.Flow:
        which = request.WhichOneof("key")
        caller = current_identity().name
        if which == "flow_no":
            flow_no = v.pattern(request.flow_no, "flow_no", v.FLOW_NO, "a 26-character flow_no")
            flow = await self.flows.get(caller, flow_no=flow_no)
        elif which == "request_id":
            flow = await self.flows.get(caller, request_id=v.request_id(request.request_id))
        else:
            raise InvalidInput("key", "set flow_no or request_id")
        if flow.kind is FlowKind.COLLECT and self.collections is not None:
            return _collection_pb(await self.collections.collection(flow))
        return flow_pb(flow)

    async def SignAgreement(self, request: gateway_pb2.SignAgreementRequest, context: Ctx) -> gateway_pb2.Agreement:
        request_id = v.request_id(request.request_id)
        params = SignParams(
            channel=v.pattern(request.channel, "channel", v.CHANNEL_ID, "a configured channel id", required=False),
            account_no=v.card_no(request.account_no),
            holder_name=v.text(request.holder_name, "holder_name", max_len=64, required=True),
            id_no=v.pattern(request.id_no, "id_no", v.ID_NO, "an 18-character national id number"),
            phone=v.pattern(request.phone, "phone", v.PHONE, "an 11-digit mobile number"),
            bank_code=self._bank(request.bank_code),
        )
        row = await self.agreements.sign(current_identity().name, request_id, params)
        return agreement_pb(row)

    async def ConfirmAgreement(
        self, request: gateway_pb2.ConfirmAgreementRequest, context: Ctx
    ) -> gateway_pb2.Agreement:
        agreement_no = v.pattern(request.agreement_no, "agreement_no", v.FLOW_NO, "a 26-character agreement number")
        sms_code = v.pattern(request.sms_code, "sms_code", v.SMS_CODE, "4-8 digits")
        row = await self.agreements.confirm(current_identity().name, agreement_no, sms_code)
        return agreement_pb(row)

    async def RevokeAgreement(self, request: gateway_pb2.RevokeAgreementRequest, context: Ctx) -> gateway_pb2.Agreement:
        agreement_no = v.pattern(request.agreement_no, "agreement_no", v.FLOW_NO, "a 26-character agreement number")
        row = await self.agreements.revoke(current_identity().name, agreement_no)
        return agreement_pb(row)

    async def ListAgreements(
        self, request: gateway_pb2.ListAgreementsRequest, context: Ctx
    ) -> gateway_pb2.ListAgreementsResponse:
        account_no = v.card_no(request.account_no) if request.account_no else ""
        limit = v.page_size(request.page_size)
        after = _page_token(request.page_token)
        rows = await self.agreements.list(current_identity().name, account_no, after, limit + 1)
        out = gateway_pb2.ListAgreementsResponse(agreements=[agreement_pb(r) for r in rows[:limit]])
        if len(rows) > limit:
            out.next_page_token = _next_token(rows[limit - 1].id)
        return out
