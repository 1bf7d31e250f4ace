"""The settlements screen: joint-loan funders' settlements per business day and their statements (viewer role);
an operator re-sends the payout of a PAYOUT_FAILED settlement, with a reason.

Reads and the re-send go through the settlement use case (:class:`gateway.splits.settlement.SettlementService`),
as the admin API's ResendSettlementPayout does (audited in the store's commit); never SQL here. The
role (operator) and the CSRF token of the re-send are checked by the server for every request.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from aiohttp import web

from gateway import validation as v
from gateway.console import views
from gateway.console.operators import Role
from gateway.console.screens import NavItem, Route, Screen
from gateway.console.server import deps, notice_redirect, operator_of, render
from gateway.domain import scrub
from gateway.errors import GatewayError, InvalidInput, NotFound
from gateway.splits.funders import FUNDER_ID
from gateway.store.rows import utcnow


async def settlements(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    service = d.settlement
    if service is None:
        raise NotFound("settlements: not served by this console")
    q = request.query
    funder = v.pattern(q.get("funder", "").strip(), "funder", FUNDER_ID, "a funder id", required=False)
    day = views.parse_day(q.get("day", ""), "day")
    if day is None and not funder:
        day = d.calendar.day_of(utcnow()) - timedelta(days=1)  # yesterday: the day settled this morning
    found = await service.settlements(day=day, funder_id=funder, limit=d.config.page_size)
    rows = [
        {
            "s": s,
            "day": s.business_day.isoformat(),
            **{
                name: views.money(getattr(s, name), s.currency)
                for name in ("withheld", "refunded", "carried_in", "net", "paid", "carried_out")
            },
        }
        for s in found
    ]
    form = {"day": day.isoformat() if day else "", "funder": funder}
    return render(request, "settlements.html", rows=rows, form=form, funders=list(service.funders))


async def statement(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    if d.settlement is None:
        raise NotFound("settlements: not served by this console")
    funder = v.pattern(request.match_info["funder"], "funder", FUNDER_ID, "a funder id")
    day = views.parse_day(request.match_info["day"], "day")
    if day is None:
        raise NotFound("day: none given")
    got = await d.settlement.statement(funder, day)
    return web.Response(
        body=got.csv.encode("utf-8"),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{got.filename}"',
        },
    )


async def resend(request: web.Request) -> web.StreamResponse:
    """Re-send a PAYOUT_FAILED settlement's payout under a new request id, as ResendSettlementPayout does."""
    d = deps(request)
    if d.settlement is None:
        raise NotFound("settlements: not served by this console")
    form = {k: str(x) for k, x in (await request.post()).items() if isinstance(x, str)}
    back = "/settlements"
    try:
        funder = v.pattern(form.get("funder", ""), "funder", FUNDER_ID, "a funder id")
        day = views.parse_day(form.get("day", ""), "day")
        if day is None:
            raise InvalidInput("day", "is required (YYYY-MM-DD)")
        back = f"/settlements?{urlencode({'day': day.isoformat()})}"
        reason = v.text(form.get("reason", ""), "reason", max_len=512, required=True)
        row = await d.settlement.resend(funder, day, operator=operator_of(request).name, reason=reason)
    except GatewayError as exc:
        raise notice_redirect(request, back, "error.failed", error=True, detail=scrub(str(exc))[:300]) from None
    raise notice_redirect(
        request,
        back,
        "settlements.done_resend",
        funder=row.funder_id,
        request_id=row.payout_request_id,
        status=row.status,
    )


SCREEN = Screen(
    NavItem("settlements", "/settlements", "nav.settlements"),
    (
        Route("GET", "/settlements", settlements, "settlements", Role.VIEWER),
        Route("GET", "/settlements/{funder}/{day}.csv", statement, "settlement_statement", Role.VIEWER),
        Route("POST", "/settlements/resend", resend, "settlement_resend", Role.OPERATOR),
    ),
    shown=lambda d: d.settlement is not None and len(d.settlement.funders) > 0,
)
