"""The operators' use cases for time point runs: what the PlanAdmin API and the console both do.

Each checks its input (a run key from text, a required reason; :class:`~gateway.errors.InvalidInput`
naming the field), makes the change through :class:`~gateway.plans.service.PlanService` and records
it in the audit log with the operator and the reason (``start_plan_run``, ``pause_plan_run``,
``resume_plan_run``, target ``plan_run:<policy>/<day>/<HH:MM>``). The operator's name and role were
established by the entrypoint (the gRPC interceptor, the console's session), which checked the role.
"""

from __future__ import annotations

from datetime import date

from gateway import validation as v
from gateway.businessday import parse_hhmm
from gateway.errors import InvalidInput
from gateway.operations import reason_text
from gateway.plans.model import RunKey, RunProgress
from gateway.plans.ports import AuditLog
from gateway.plans.service import PlanService
from gateway.plans.spec import due_date


class PlanOperations:
    def __init__(self, plans: PlanService, audit: AuditLog) -> None:
        self.plans = plans
        self.audit = audit

    def key(self, policy: str, business_day: str, time_point: str, *, today_allowed: bool = False) -> RunKey:
        """The run of ``policy`` at ``time_point`` (``HH:MM``) on ``business_day`` (``YYYY-MM-DD``; "" = today
        when ``today_allowed``), checked against the configured policies."""
        policy = v.pattern(policy, "policy", v.CHANNEL_ID, "a configured policy name")
        if business_day:
            day: date | None = due_date(business_day, "business_day")
        elif today_allowed:
            day = None
        else:
            raise InvalidInput("business_day", "is required (YYYY-MM-DD)")
        try:
            point = parse_hhmm(time_point)
        except ValueError as exc:
            raise InvalidInput("time_point", str(exc)) from None
        return self.plans.run_key(policy, day, f"{point.hour:02d}:{point.minute:02d}")

    async def _audited(self, action: str, key: RunKey, operator: str, reason: str) -> None:
        await self.audit.record(operator, action, f"plan_run:{key.label()}", reason, {})

    async def start_run(self, key: RunKey, operator: str, reason: str) -> RunProgress:
        """Start a time point's run by hand (or again): see PlanService.start_run."""
        reason = reason_text(reason)
        await self.plans.start_run(operator, key)
        await self._audited("start_plan_run", key, operator, reason)
        return await self.plans.progress(key)

    async def pause_run(self, key: RunKey, operator: str, reason: str) -> RunProgress:
        """Nothing new is sent for the run once the pause commits; withholds in flight finish."""
        reason = reason_text(reason)
        await self.plans.pause_run(key)
        await self._audited("pause_plan_run", key, operator, reason)
        return await self.plans.progress(key)

    async def resume_run(self, key: RunKey, operator: str, reason: str) -> RunProgress:
        reason = reason_text(reason)
        await self.plans.resume_run(key)
        await self._audited("resume_plan_run", key, operator, reason)
        return await self.plans.progress(key)
