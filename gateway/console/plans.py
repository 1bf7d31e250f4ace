"""The plans screen (代扣计划): today's time points with their progress, the instalment search, and the
operators' run actions (start, pause, resume) through the use cases the PlanAdmin API calls.

Reads: the time points' progress from the plan store (``PlanService.list_runs``: queued = due and
not yet sent, sent = in flight, succeeded, failed by code) and the instalment search
(:class:`PlanReads`, gateway/store/console_plans.py: every caller's instalments, masked payers,
keyset pages). Changes: :class:`gateway.plans.operations.PlanOperations`, audited there, each
with a reason; the role (operator) is checked by the server for every request.

"Today" is the business day of the plan executor's clock in the lender's timezone.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol
from urllib.parse import urlencode

from aiohttp import web

from gateway import validation as v
from gateway.console import views
from gateway.console.operators import Role
from gateway.console.screens import NavItem, Route, Screen
from gateway.console.server import ConsoleDeps, deps, notice_redirect, operator_of, render, t_of
from gateway.domain import scrub
from gateway.errors import GatewayError, InvalidInput, QueryTooBroad
from gateway.plans.model import InstalmentStatus, RunProgress, RunStatus
from gateway.plans.operations import PlanOperations
from gateway.store.console_rows import InstalmentCursor, InstalmentListItem, InstalmentQuery

INSTALMENT_STATUSES = tuple(s.value for s in InstalmentStatus)
SEARCH_FIELDS = ("plan_id", "caller", "status", "from", "to")


class PlanReads(Protocol):
    async def search_instalments(self, query: InstalmentQuery) -> list[InstalmentListItem]:
        """Earliest due first; raises QueryTooBroad when the search runs past the time limit."""
        ...


@dataclass(frozen=True)
class PlansDeps:
    """What the plans screen reads and acts through; built by gateway/app.py when [plans] is configured."""

    reads: PlanReads
    operations: PlanOperations


def _plans(request: web.Request) -> PlansDeps:
    found = deps(request).plans
    if found is None:
        raise web.HTTPNotFound()  # this gateway has no [plans]: the screen is not offered
    return found


# --- the search form --------------------------------------------------------------------------


def encode_cursor(cursor: InstalmentCursor) -> str:
    return base64.urlsafe_b64encode(f"{cursor.due_date.isoformat()}|{cursor.id}".encode()).rstrip(b"=").decode()


def decode_cursor(token: str) -> InstalmentCursor:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        day, _, row_id = raw.partition("|")
        return InstalmentCursor(date.fromisoformat(day), int(row_id))
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("after", "is not a page cursor of this search") from None


def parse_search(params: Any, today: date, *, limit: int) -> tuple[dict[str, str], InstalmentQuery]:
    """The instalment search of a query string (a first visit: due from today); raises InvalidInput naming the field."""
    values = {name: str(params.get(name, "")).strip() for name in SEARCH_FIELDS}
    if not any(name in params for name in (*SEARCH_FIELDS, "after")):  # a first visit (?lang= aside)
        values["from"] = today.isoformat()
    plan_id = v.request_id(values["plan_id"], "plan_id") if values["plan_id"] else ""
    caller = v.pattern(values["caller"], "caller", v.CHANNEL_ID, "a caller name", required=False)
    if values["status"] and values["status"] not in INSTALMENT_STATUSES:
        raise InvalidInput("status", f"must be one of {', '.join(INSTALMENT_STATUSES)}")
    first, last = views.parse_day(values["from"], "from"), views.parse_day(values["to"], "to")
    if first is not None and last is not None and first > last:
        raise InvalidInput("from", "must not be after to")
    after = decode_cursor(str(params["after"])) if params.get("after") else None
    query = InstalmentQuery(plan_id, caller, values["status"], first, last, after, limit)
    return values, query


# --- the page ---------------------------------------------------------------------------------


def _today(d: ConsoleDeps, plans: PlansDeps) -> tuple[datetime, date]:
    now = plans.operations.plans.clock.now()
    return now, d.calendar.day_of(now)


def _time_points(
    request: web.Request, plans: PlansDeps, now: datetime, today: date, progress: list[RunProgress]
) -> list[dict[str, Any]]:
    """Every configured time point of today, with its run's progress if it has one."""
    service = plans.operations.plans
    by_key = {(p.run.policy, p.run.time_point): p for p in progress}
    rows = []
    for policy, schedule in sorted(service.schedules.items()):
        for label, moment in schedule.moments(today):
            p = by_key.pop((policy, label), None)
            rows.append(_point_row(request, policy, label, moment, p, can_start=moment <= now))
    for p in by_key.values():  # a run of a time point no longer configured
        rows.append(_point_row(request, p.run.policy, p.run.time_point, p.run.scheduled_at, p, can_start=False))
    return rows


def _point_row(
    request: web.Request, policy: str, label: str, moment: datetime, p: RunProgress | None, *, can_start: bool
) -> dict[str, Any]:
    d = deps(request)
    status = p.run.status if p is not None else None
    return {
        "policy": policy,
        "time_point": label,
        "moment": views.local(moment, d.calendar),
        "status": status.value if status is not None else "",
        "due": p.run.due if p is not None else None,
        "queued": p.remaining if p is not None else None,
        "sent": p.in_flight if p is not None else None,
        "succeeded": p.succeeded if p is not None else None,
        "amount": "; ".join(views.money(n, c) for c, n in sorted(p.succeeded_amounts.items())) if p else "",
        "failed": sum(p.failed.values()) if p is not None else None,
        "codes": ", ".join(f"{code or '?'} × {n}" for code, n in sorted(p.failed.items())) if p else "",
        "missed": p.run.missed if p is not None else 0,
        "started_by": p.run.started_by if p is not None else "",
        "can_pause": status in (RunStatus.RUNNING, RunStatus.FINISHED),
        "can_resume": status is RunStatus.PAUSED,
        "can_start": can_start and status in (None, RunStatus.FINISHED, RunStatus.BEHIND),
    }


async def plans_page(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    plans = _plans(request)
    t = t_of(request)
    now, today = _today(d, plans)
    values, query = parse_search(request.query, today, limit=d.config.page_size + 1)
    error = ""
    items: list[InstalmentListItem] = []
    try:
        items = await plans.reads.search_instalments(query)
    except QueryTooBroad:
        error = t("flows.too_broad")
    more = len(items) > d.config.page_size
    items = items[: d.config.page_size]
    search = {k: x for k, x in values.items() if x}
    next_link = ""
    if more and items:
        last = items[-1]
        next_link = urlencode({**search, "after": encode_cursor(InstalmentCursor(last.due_date, last.id))})
    progress = await plans.operations.plans.list_runs(today, "")
    return render(
        request,
        "plans.html",
        today=today.isoformat(),
        zone=d.calendar.name,
        points=_time_points(request, plans, now, today, progress),
        form=values,
        statuses=INSTALMENT_STATUSES,
        rows=[
            {
                "i": i,
                "amount": views.money(i.amount, i.currency),
                "original": views.money(i.original_amount, i.currency),
                "next": views.local(i.next_attempt_at, d.calendar),
                "code": scrub(i.stop_reason or i.last_code),
            }
            for i in items
        ],
        error=error,
        next_link=next_link,
        first_link=urlencode(search) if request.query.get("after") else "",
    )


# --- the run actions --------------------------------------------------------------------------


async def _run_action(request: web.Request, action: str) -> web.StreamResponse:
    plans = _plans(request)
    form = {k: str(x) for k, x in (await request.post()).items() if isinstance(x, str)}
    operations = plans.operations
    operator = operator_of(request).name
    try:
        key = operations.key(
            form.get("policy", ""), form.get("business_day", ""), form.get("time_point", ""), today_allowed=True
        )
        reason = form.get("reason", "")
        if action == "start":
            await operations.start_run(key, operator, reason)
        elif action == "pause":
            await operations.pause_run(key, operator, reason)
        else:
            await operations.resume_run(key, operator, reason)
    except GatewayError as exc:
        raise notice_redirect(request, "/plans", "error.failed", error=True, detail=scrub(str(exc))[:300]) from None
    raise notice_redirect(request, "/plans", f"plans.done_{action}", run=key.label())


async def run_start(request: web.Request) -> web.StreamResponse:
    return await _run_action(request, "start")


async def run_pause(request: web.Request) -> web.StreamResponse:
    return await _run_action(request, "pause")


async def run_resume(request: web.Request) -> web.StreamResponse:
    return await _run_action(request, "resume")


SCREEN = Screen(
    NavItem("plans", "/plans", "nav.plans"),
    (
        Route("GET", "/plans", plans_page, "plans", Role.VIEWER),
        Route("POST", "/plans/runs/start", run_start, "plan_run_start", Role.OPERATOR),
        Route("POST", "/plans/runs/pause", run_pause, "plan_run_pause", Role.OPERATOR),
        Route("POST", "/plans/runs/resume", run_resume, "plan_run_resume", Role.OPERATOR),
    ),
    shown=lambda d: d.plans is not None,
)
