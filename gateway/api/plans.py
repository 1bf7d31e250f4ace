"""WithholdingPlans (callers) and PlanAdmin (operators) servicers: validate, call the plan use cases, convert.

Plans belong to their caller (the identity the auth interceptor found). A bulk submission
never fails as a whole for a bad item: the response names the refused items and fields. Only
masked account numbers ever leave (``account_masked``).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import grpc

from gateway import validation as v
from gateway.api.auth import current_identity
from gateway.api.convert import ts
from gateway.errors import InvalidInput
from gateway.plans.model import (
    AttemptRow,
    AttemptStatus,
    Closing,
    InstalmentRow,
    InstalmentStatus,
    PlanRow,
    RunKey,
    RunProgress,
    RunStatus,
)
from gateway.plans.operations import PlanOperations
from gateway.plans.ports import AuditLog, Submitted
from gateway.plans.service import PlanService
from gateway.plans.spec import InstalmentSpec, PlanSpec, due_date
from gateway.splits.requests import raw_shares
from paygate.v1 import gateway_pb2, plans_pb2, plans_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]

_INSTALMENT_STATUS = {s: plans_pb2.InstalmentStatus.Value(f"INSTALMENT_{s.value}") for s in InstalmentStatus}
_INSTALMENT_STATUS_BACK = {number: status for status, number in _INSTALMENT_STATUS.items()}
_ATTEMPT_STATUS = {s: plans_pb2.PlanAttemptStatus.Value(f"PLAN_ATTEMPT_{s.value}") for s in AttemptStatus}
_RUN_STATUS = {s: plans_pb2.RunStatus.Value(f"RUN_{s.value}") for s in RunStatus}
_MAX_PAGE = 1000


def _set(message: Any, name: str, value: Any) -> None:
    stamp = ts(value)
    if stamp is not None:
        getattr(message, name).CopyFrom(stamp)


def _specs(request: plans_pb2.SubmitPlansRequest) -> list[PlanSpec]:
    return [
        PlanSpec(
            plan_id=p.plan_id,
            product=p.product,
            account_no=p.account_no,
            bank_code=p.bank_code,
            agreement_no=p.agreement_no,
            description=p.description,
            instalments=[
                InstalmentSpec(
                    i.instalment_id,
                    i.due_date,
                    i.amount.amount,
                    i.amount.currency,
                    i.HasField("amount"),
                    raw_shares(i.shares),
                )
                for i in p.instalments
            ],
        )
        for p in request.plans
    ]


def submitted_pb(result: Submitted, sequence: int = 0) -> plans_pb2.SubmitPlansResponse:
    out = plans_pb2.SubmitPlansResponse(
        plans_accepted=result.plans_accepted,
        instalments_accepted=result.instalments_accepted,
        instalments_replayed=result.instalments_replayed,
        instalments_rejected=sum(r.instalments for r in result.rejected),
        sequence=sequence,
    )
    for r in result.rejected:
        out.rejected.add(
            plan_id=r.plan_id,
            instalment_id=r.instalment_id,
            field=r.field,
            message=r.problem,
            code=r.code.value,
            instalments=r.instalments,
        )
    return out


def attempt_pb(a: AttemptRow) -> plans_pb2.InstalmentAttempt:
    out = plans_pb2.InstalmentAttempt(
        business_day=a.business_day.isoformat(),
        time_point=a.time_point,
        request_id=a.request_id,
        flow_no=a.flow_no,
        status=_ATTEMPT_STATUS[a.status],
        failure_code=a.code,
        amount=gateway_pb2.Money(amount=a.amount, currency=a.currency),
        channel=a.channel,
    )
    _set(out, "created_at", a.created_at)
    _set(out, "finished_at", a.finished_at)
    return out


def instalment_pb(i: InstalmentRow) -> plans_pb2.Instalment:
    out = plans_pb2.Instalment(
        plan_id=i.plan_id,
        instalment_id=i.instalment_id,
        due_date=i.due_date.isoformat(),
        amount=gateway_pb2.Money(amount=i.amount, currency=i.currency),
        original_amount=gateway_pb2.Money(amount=i.original_amount, currency=i.currency),
        status=_INSTALMENT_STATUS[i.status],
        paused=i.paused,
        plan_paused=i.plan_paused,
        attempts=i.attempts,
        last_failure_code=i.last_code,
        stop_reason=i.stop_reason,
        last_day=i.last_day.isoformat(),
        closing=i.closing.value,
        product=i.product,
    )
    if i.status is InstalmentStatus.SCHEDULED:
        _set(out, "next_attempt_at", i.next_attempt_at)
    _set(out, "updated_at", i.updated_at)
    out.attempt_history.extend(attempt_pb(a) for a in i.attempt_rows)
    return out


def plan_pb(p: PlanRow) -> plans_pb2.Plan:
    out = plans_pb2.Plan(
        plan_id=p.plan_id,
        product=p.product,
        policy=p.policy,
        status=plans_pb2.PlanStatus.Value(f"PLAN_{p.status.value}"),
        paused=p.paused,
        account_masked=p.account_masked,
        bank_code=p.bank_code,
        agreement_no=p.agreement_no,
        description=p.description,
    )
    out.instalments.extend(instalment_pb(i) for i in p.instalments)
    _set(out, "created_at", p.created_at)
    _set(out, "updated_at", p.updated_at)
    return out


def run_pb(progress: RunProgress) -> plans_pb2.Run:
    run = progress.run
    out = plans_pb2.Run(
        policy=run.policy,
        business_day=run.business_day.isoformat(),
        time_point=run.time_point,
        status=_RUN_STATUS[run.status],
        started_by=run.started_by,
        due=run.due,
        attempted=progress.attempted,
        succeeded=progress.succeeded,
        in_flight=progress.in_flight,
        remaining=progress.remaining,
        lag_s=run.lag_s,
        missed=run.missed,
    )
    for currency, amount in sorted(progress.succeeded_amounts.items()):
        out.succeeded_amounts.add(amount=amount, currency=currency)
    for code, n in progress.failed.items():
        out.failed_by_code[code] = n
    for name in ("scheduled_at", "deadline", "started_at", "finished_at"):
        _set(out, name, getattr(run, name))
    return out


def _page_token(token: str) -> tuple[date, int] | None:
    if not token:
        return None
    try:
        day, _, last = base64.urlsafe_b64decode(token.encode() + b"==").decode().partition(":")
        return date.fromisoformat(day), int(last)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("page_token", "is not a token this server issued") from None


def _next_token(row: InstalmentRow) -> str:
    return base64.urlsafe_b64encode(f"{row.due_date.isoformat()}:{row.id}".encode()).decode().rstrip("=")


def _plan_id(value: str) -> str:
    return v.request_id(value, "plan_id")


def _reason(value: str) -> str:
    return v.text(value, "reason", max_len=255)


class WithholdingPlansServicer(plans_pb2_grpc.WithholdingPlansServicer):
    def __init__(self, plans: PlanService) -> None:
        self.plans = plans

    async def SubmitPlans(self, request: plans_pb2.SubmitPlansRequest, context: Ctx) -> plans_pb2.SubmitPlansResponse:
        return submitted_pb(await self.plans.submit(current_identity().name, _specs(request)))

    async def ImportPlans(
        self, request_iterator: AsyncIterator[plans_pb2.SubmitPlansRequest], context: Ctx
    ) -> AsyncIterator[plans_pb2.SubmitPlansResponse]:
        caller = current_identity().name
        sequence = 0
        async for request in request_iterator:
            yield submitted_pb(await self.plans.submit(caller, _specs(request)), sequence)
            sequence += 1

    async def GetPlan(self, request: plans_pb2.GetPlanRequest, context: Ctx) -> plans_pb2.Plan:
        plan = await self.plans.get(
            current_identity().name, _plan_id(request.plan_id), with_attempts=request.include_attempts
        )
        return plan_pb(plan)

    async def ListInstalments(
        self, request: plans_pb2.ListInstalmentsRequest, context: Ctx
    ) -> plans_pb2.ListInstalmentsResponse:
        due_from = due_date(request.due_from, "due_from") if request.due_from else None
        due_to = due_date(request.due_to, "due_to") if request.due_to else None
        statuses = set()
        for i, number in enumerate(request.statuses):
            status = _INSTALMENT_STATUS_BACK.get(number)
            if status is None:
                raise InvalidInput(f"statuses[{i}]", "is not an instalment status")
            statuses.add(status)
        if request.page_size < 0 or request.page_size > _MAX_PAGE:
            raise InvalidInput("page_size", f"must be between 0 and {_MAX_PAGE}")
        limit = request.page_size or 100
        plan_id = _plan_id(request.plan_id) if request.plan_id else ""
        rows = await self.plans.list_instalments(
            current_identity().name,
            due_from=due_from,
            due_to=due_to,
            statuses=frozenset(statuses),
            plan_id=plan_id,
            after=_page_token(request.page_token),
            limit=limit + 1,
        )
        out = plans_pb2.ListInstalmentsResponse(instalments=[instalment_pb(r) for r in rows[:limit]])
        if len(rows) > limit:
            out.next_page_token = _next_token(rows[limit - 1])
        return out

    async def _pause(self, request: plans_pb2.PlanChangeRequest, paused: bool) -> plans_pb2.Plan:
        _reason(request.reason)
        instalment_id = v.request_id(request.instalment_id, "instalment_id") if request.instalment_id else ""
        plan = await self.plans.set_paused(current_identity().name, _plan_id(request.plan_id), instalment_id, paused)
        return plan_pb(plan)

    async def PausePlan(self, request: plans_pb2.PlanChangeRequest, context: Ctx) -> plans_pb2.Plan:
        return await self._pause(request, True)

    async def ResumePlan(self, request: plans_pb2.PlanChangeRequest, context: Ctx) -> plans_pb2.Plan:
        return await self._pause(request, False)

    async def AmendInstalment(self, request: plans_pb2.AmendInstalmentRequest, context: Ctx) -> plans_pb2.Instalment:
        _reason(request.reason)
        amount, currency = v.money(request.amount.amount, request.amount.currency, present=request.HasField("amount"))
        row = await self.plans.amend(
            current_identity().name,
            _plan_id(request.plan_id),
            v.request_id(request.instalment_id, "instalment_id"),
            amount,
            currency,
        )
        return instalment_pb(row)

    async def _close(self, request: plans_pb2.PlanChangeRequest, closing: Closing) -> plans_pb2.Plan:
        _reason(request.reason)
        instalment_id = v.request_id(request.instalment_id, "instalment_id") if request.instalment_id else ""
        plan = await self.plans.close(current_identity().name, _plan_id(request.plan_id), instalment_id, closing)
        return plan_pb(plan)

    async def SettlePlan(self, request: plans_pb2.PlanChangeRequest, context: Ctx) -> plans_pb2.Plan:
        return await self._close(request, Closing.SETTLE)

    async def CancelPlan(self, request: plans_pb2.PlanChangeRequest, context: Ctx) -> plans_pb2.Plan:
        return await self._close(request, Closing.CANCEL)


class PlanAdminServicer(plans_pb2_grpc.PlanAdminServicer):
    """Operators start, pause and resume time point runs and watch their progress; changes are audited
    (gateway/plans/operations.py, the use cases the console calls too)."""

    def __init__(self, plans: PlanService, audit: AuditLog) -> None:
        self.plans = plans
        self.operations = PlanOperations(plans, audit)

    def _key(self, request: plans_pb2.RunRequest, *, today_allowed: bool = False) -> RunKey:
        return self.operations.key(
            request.policy, request.business_day, request.time_point, today_allowed=today_allowed
        )

    async def StartRun(self, request: plans_pb2.RunRequest, context: Ctx) -> plans_pb2.Run:
        key = self._key(request, today_allowed=True)
        return run_pb(await self.operations.start_run(key, current_identity().name, request.reason))

    async def PauseRun(self, request: plans_pb2.RunRequest, context: Ctx) -> plans_pb2.Run:
        key = self._key(request)
        return run_pb(await self.operations.pause_run(key, current_identity().name, request.reason))

    async def ResumeRun(self, request: plans_pb2.RunRequest, context: Ctx) -> plans_pb2.Run:
        key = self._key(request)
        return run_pb(await self.operations.resume_run(key, current_identity().name, request.reason))

    async def GetRun(self, request: plans_pb2.RunRequest, context: Ctx) -> plans_pb2.Run:
        return run_pb(await self.plans.progress(self._key(request, today_allowed=True)))

    async def ListRuns(self, request: plans_pb2.ListRunsRequest, context: Ctx) -> plans_pb2.ListRunsResponse:
        day = due_date(request.business_day, "business_day") if request.business_day else None
        policy = v.pattern(request.policy, "policy", v.CHANNEL_ID, "a configured policy name", required=False)
        return plans_pb2.ListRunsResponse(runs=[run_pb(p) for p in await self.plans.list_runs(day, policy)])
