"""The reconciliation screen (对账): the runs of each channel and business day, and a run's discrepancies
(viewer role); an operator marks a discrepancy explained or resolved, with a reason.

Reads and the mark go through the reconciliation use case (:class:`gateway.recon.service.Reconciler`),
the one the ``paygate.v1.Reconciliation`` API calls: the mark is audited in the store's commit, as the
API's ResolveDiscrepancy is. Never SQL here; the role (operator) and the CSRF token of the mark are
checked by the server for every request.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from gateway import validation as v
from gateway.console import views
from gateway.console.operators import Role
from gateway.console.screens import NavItem, Route, Screen
from gateway.console.server import deps, notice_redirect, operator_of, render
from gateway.domain import scrub
from gateway.errors import GatewayError, InvalidInput
from gateway.recon.model import CRITICAL, ItemRow, Resolution, RunRow
from gateway.recon.service import Reconciler

CURRENCY = "CNY"  # statements are in yuan; amounts are kept in minor units (fen)
MARKS = (Resolution.EXPLAINED.value, Resolution.RESOLVED.value)
KINDS = ("withhold", "payout", "refund")


def _recon(request: web.Request) -> Reconciler:
    found = deps(request).recon
    if found is None:
        raise web.HTTPNotFound()  # this console has no reconciliation: the screen is not offered
    return found


def _id(text: str, field_name: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 2**63:
        raise InvalidInput(field_name, "must be a positive whole number")
    return int(text)


def _side(totals: dict[str, Any], side: str, kind: str) -> dict[str, Any]:
    got = totals.get(side, {}).get(kind, {})
    count, amount, fee = int(got.get("count", 0)), int(got.get("amount", 0)), int(got.get("fee", 0))
    return {"count": count, "amount": amount, "money": views.money(amount, CURRENCY), "fee": views.money(fee, CURRENCY)}


def run_row(run: RunRow) -> dict[str, Any]:
    """A run as the page shows it: both sides' count, amount and fee by kind, in yuan exactly."""
    kinds = sorted(set(run.totals.get("statement", {})) | set(run.totals.get("local", {})), key=_kind_order)
    return {
        "r": run,
        "day": run.day.isoformat(),
        "kinds": [
            {"kind": k, "statement": _side(run.totals, "statement", k), "local": _side(run.totals, "local", k)}
            for k in kinds
        ],
        "error": scrub(run.error)[:300],
    }


def _kind_order(kind: str) -> tuple[int, str]:
    return (KINDS.index(kind) if kind in KINDS else len(KINDS), kind)


def item_row(item: ItemRow) -> dict[str, Any]:
    def money(amount: int | None) -> str:
        return views.money(amount, CURRENCY) if amount is not None else "–"

    return {
        "i": item,
        "class": item.item_class.value,
        "critical": item.item_class in CRITICAL,
        "local_amount": money(item.local_amount) if item.local_status else "–",
        "line_amount": money(item.line_amount) if item.line_status else "–",
        "line_fee": money(item.line_fee) if item.line_status else "–",
        "reason": scrub(item.resolution_reason),
        "open": item.resolution is Resolution.OPEN,
    }


async def recon_page(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    recon = _recon(request)
    q = request.query
    channel = v.pattern(q.get("channel", "").strip(), "channel", v.CHANNEL_ID, "a channel id", required=False)
    day = views.parse_day(q.get("day", ""), "day")
    selected = _id(q["run"], "run") if q.get("run") else None
    runs = await recon.runs(channel=channel, day=day, limit=d.config.page_size)
    run = await recon.run(selected) if selected is not None else None
    items = await recon.discrepancies(run_id=run.id, limit=1000) if run is not None else []
    filters = {k: x for k, x in (("channel", channel), ("day", day.isoformat() if day else "")) if x}
    return render(
        request,
        "recon.html",
        form={"channel": channel, "day": day.isoformat() if day else ""},
        channels=sorted(channel_id for channel_id, _ in d.registry.items()),
        runs=[{**run_row(r), "link": urlencode({**filters, "run": r.id})} for r in runs],
        run=run_row(run) if run is not None else None,
        items=[item_row(i) for i in items],
        marks=MARKS,
        back=urlencode(filters),
    )


async def mark(request: web.Request) -> web.StreamResponse:
    """Mark one open discrepancy EXPLAINED or RESOLVED with a reason, as ResolveDiscrepancy does."""
    recon = _recon(request)
    form = {k: str(x) for k, x in (await request.post()).items() if isinstance(x, str)}
    back = "/recon"
    try:
        run_id = _id(form.get("run", ""), "run")
        back = f"/recon?{urlencode({'run': run_id})}"
        item_id = _id(form.get("id", ""), "id")
        if form.get("resolution", "") not in MARKS:
            raise InvalidInput("resolution", "must be EXPLAINED or RESOLVED")
        reason = v.text(form.get("reason", ""), "reason", max_len=500, required=True)
        marked = await recon.mark(
            item_id, Resolution(form["resolution"]), operator=operator_of(request).name, reason=reason
        )
    except GatewayError as exc:
        raise notice_redirect(request, back, "error.failed", error=True, detail=scrub(str(exc))[:300]) from None
    raise notice_redirect(request, back, f"recon.done_{marked.resolution.value.lower()}", order=marked.channel_order_no)


SCREEN = Screen(
    NavItem("recon", "/recon", "nav.recon"),
    (
        Route("GET", "/recon", recon_page, "recon", Role.VIEWER),
        Route("POST", "/recon/discrepancies/mark", mark, "recon_mark", Role.OPERATOR),
    ),
    shown=lambda d: d.recon is not None,
)
