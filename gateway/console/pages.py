"""The console's read screens: overview, flows (search, CSV, one flow's timeline), review queue,
channels, outbox, audit log. Each reads through the store's read model and the use cases' ports."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway import validation as v
from gateway.console import views
from gateway.console.server import ConsoleDeps, deps, operator_of, render, t_of
from gateway.domain import scrub
from gateway.errors import GatewayError, QueryTooBroad
from gateway.store.console_rows import ChannelOutcomes, DayPoint, FlowCursor, FlowQuery
from gateway.store.rows import AuditQuery, utcnow
from routing.config import MaintenanceWindow

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _fmt(moment: datetime | None, request: web.Request) -> str:
    return views.local(moment, deps(request).calendar)


# --- overview --------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    t = t_of(request)
    now = utcnow()
    calendar = d.calendar
    today = calendar.day_of(now)
    days = [today - timedelta(days=i) for i in range(6, -1, -1)]
    bounds = [calendar.bounds(day) for day in days]
    # independent reads, in parallel on the pool (two gathers: asyncio.gather is typed up to six)
    totals_today, totals_yesterday, earlier, last_hour, last_day = await asyncio.gather(
        d.reads.totals(*bounds[-1]),
        d.reads.totals(*bounds[-2]),
        _earlier_days(d, bounds[:-2]),
        d.reads.channel_outcomes(now - timedelta(hours=1)),
        d.reads.channel_outcomes(now - timedelta(days=1)),
    )
    trend = [
        *earlier,
        *(DayPoint(len(days) - 2, r.status, r.count, r.amount) for r in totals_yesterday),
        *(DayPoint(len(days) - 1, r.status, r.count, r.amount) for r in totals_today),
    ]
    review, backlog, open_attempts, discrepancies = await asyncio.gather(
        d.flows.review_count(),
        d.reads.outbox_backlog(d.outbox_max_attempts),
        d.flows.open_attempts(),
        d.reads.discrepancies_since(now - timedelta(minutes=15)),
    )
    snapshot = d.planner.router.snapshot(time.time())
    channel_views = [views.ChannelView(s.channel_id, s.state.value, s.eliminated) for s in snapshot]
    oldest = (now - open_attempts.oldest_created_at).total_seconds() if open_attempts.oldest_created_at else None
    alerts = views.alerts(
        t,
        review=review,
        outbox=backlog,
        channels=channel_views,
        oldest_open_s=oldest,
        discrepancies_15m=discrepancies,
        last_hour=last_hour,
    )
    kinds = sorted({r.kind for r in (*totals_today, *totals_yesterday)} or {"WITHHOLD"})
    table = []
    for kind in kinds:
        for status in views.STATUSES:
            cells = []
            for totals in (totals_today, totals_yesterday):
                rows = [r for r in totals if r.kind == kind and r.status == status]
                cells.append(
                    {
                        "count": sum(r.count for r in rows),
                        "amount": "; ".join(views.money(r.amount, r.currency) for r in rows) or "–",
                    }
                )
            table.append({"kind": kind, "status": status, "cells": cells})
    hour_of = {(o.channel, o.operation): o for o in last_hour}
    day_of = {(o.channel, o.operation): o for o in last_day}
    keys = sorted(hour_of.keys() | day_of.keys())
    rates: list[dict[str, Any]] = [
        {"channel": key[0], "operation": key[1], "hour": hour_of.get(key), "day": day_of.get(key)} for key in keys
    ]
    chart: dict[str, Any] = {
        "days": [day.strftime("%m-%d") for day in days],
        "statuses": list(views.STATUSES),
        "status_names": [t(f"status.{s}") for s in views.STATUSES],
        "counts": {s: [0] * len(days) for s in views.STATUSES},
        "rates": {
            "channels": [f"{r['channel']} {r['operation']}" for r in rates],
            "hour": [_rate(hour_of.get(key)) for key in keys],
            "day": [_rate(day_of.get(key)) for key in keys],
            "names": [t("overview.last_hour"), t("overview.last_day")],
        },
    }
    for point in trend:
        if point.status in chart["counts"]:
            chart["counts"][point.status][point.day] += point.count
    return render(
        request,
        "overview.html",
        zone=calendar.name,
        today=today.isoformat(),
        table=table,
        rates=rates,
        review=review,
        backlog=backlog,
        backlog_age=views.age(backlog.oldest_age_s),
        alerts=alerts,
        chart=chart,
        prometheus_url=d.config.prometheus_url,
        percent=views.percent,
    )


EARLIER_DAYS_TTL_S = 300.0


async def _earlier_days(d: ConsoleDeps, bounds: list[tuple[datetime, datetime]]) -> list[DayPoint]:
    """The trend's days before yesterday, kept for five minutes: what they hold hardly changes (only the
    status of a flow created then and still open), and they are the overview's largest read."""
    key = tuple(bounds)
    cached = d.trend_cache.get(key)
    if cached is not None and cached[0] > d.clock():
        return cached[1]
    points = await d.reads.trend(bounds)
    d.trend_cache.clear()  # one entry: the days move on at midnight
    d.trend_cache[key] = (d.clock() + EARLIER_DAYS_TTL_S, points)
    return points


def _rate(outcomes: ChannelOutcomes | None) -> float | None:
    rate = outcomes.success_rate if outcomes is not None else None
    return None if rate is None else round(rate * 100, 2)


# --- flows -----------------------------------------------------------------------------------


def _flow_rows(items: list[Any], request: web.Request) -> list[dict[str, Any]]:
    return [
        {
            "item": item,
            "amount": views.money(item.amount, item.currency),
            "created": _fmt(item.created_at, request),
            "finished": _fmt(item.finished_at, request),
        }
        for item in items
    ]


async def flows(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    t = t_of(request)
    form = views.parse_search(request.query, d.calendar, limit=d.config.page_size + 1)
    error = ""
    items: list[Any] = []
    try:
        items = await d.reads.search_flows(form.query)
    except QueryTooBroad:
        error = t("flows.too_broad")
    more = len(items) > d.config.page_size
    items = items[: d.config.page_size]
    next_link = ""
    if more and items:
        last = items[-1]
        next_link = form.link(after=views.encode_cursor(FlowCursor(last.created_at, last.id)))
    return render(
        request,
        "flows.html",
        form=form.values,
        rows=_flow_rows(items, request),
        error=error,
        next_link=next_link,
        first_link=form.link() if request.query.get("after") else "",
        csv_link=form.link(),
        kinds=views.KINDS,
        statuses=views.STATUSES,
        channels=sorted(d.registry),
    )


async def flows_csv(request: web.Request) -> web.StreamResponse:
    """The current search as CSV, streamed page by page (keyset), at most ``export_max_rows`` rows."""
    d = deps(request)
    page = 1000
    form = views.parse_search(request.query, d.calendar, limit=page)
    operator = operator_of(request)
    await d.audit.record(operator.name, "export_flows", "flows", "CSV export", {"search": form.link()})
    stamp = datetime.now(UTC).astimezone(d.calendar.tz).strftime("%Y%m%d-%H%M%S")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="paygate-flows-{stamp}.csv"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
            "X-Frame-Options": "DENY",  # for browsers that do not read frame-ancestors
        }
    )
    await response.prepare(request)
    try:
        await _write_csv(request, response, form.query)
    except ConnectionResetError:  # the browser went away (cancelled the download): stop reading
        return response
    except GatewayError as exc:  # the headers are gone: say so in the file itself, never a half file unnoticed
        await response.write(f"\n# export stopped: {scrub(str(exc))[:200]}\n".encode())
    await response.write_eof()
    return response


async def _write_csv(request: web.Request, response: web.StreamResponse, query: FlowQuery) -> None:
    d = deps(request)
    page = 1000
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    buffer.write("\ufeff")  # so spreadsheet programs read the Chinese in it as UTF-8
    writer.writerow(views.CSV_COLUMNS)
    written = 0
    while written < d.config.export_max_rows:
        limit = min(page, d.config.export_max_rows - written)
        items = await d.reads.search_flows(_with(query, limit=limit))
        for item in items:
            writer.writerow(
                [
                    views.csv_cell(value)
                    for value in (
                        item.flow_no,
                        _fmt(item.created_at, request),
                        _fmt(item.finished_at, request),
                        item.caller,
                        item.request_id,
                        item.kind,
                        item.status,
                        views.yuan(item.amount, item.currency),
                        item.currency,
                        item.account_masked,
                        item.bank_code,
                        item.channel,
                        item.failure_code,
                        int(item.needs_review),
                        item.description,
                    )
                ]
            )
        await response.write(buffer.getvalue().encode())
        buffer.seek(0)
        buffer.truncate()
        written += len(items)
        if len(items) < limit:
            break
        last = items[-1]
        query = _with(query, after=FlowCursor(last.created_at, last.id))


def _with(query: FlowQuery, **changes: Any) -> FlowQuery:
    from dataclasses import replace

    return replace(query, **changes)


async def flow(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    t = t_of(request)
    flow_no = v.pattern(request.match_info["flow_no"], "flow_no", v.FLOW_NO, "a 26-character flow number")
    row = await d.flows.by_flow_no(flow_no)
    if row is None:
        return render(request, "error.html", status=404, message=t("flow.not_found"))
    records = await d.reads.flow_records(row.id, row.flow_no, [a.id for a in row.attempts])
    records.audit = await d.audit.entries(AuditQuery(target=row.flow_no, limit=200))
    timeline = views.build_timeline(row, records, t, d.calendar)
    original = await d.flows.by_id(row.original_flow_id, with_attempts=False) if row.original_flow_id else None
    return render(
        request,
        "flow.html",
        flow=row,
        amount=views.money(row.amount, row.currency),
        refunded=views.money(row.refunded_amount, row.currency),
        created=_fmt(row.created_at, request),
        finished=_fmt(row.finished_at, request),
        timeline=[{"entry": e, "at": _fmt(e.at, request)} for e in timeline],
        original=original,
        money=views.money,
    )


# --- review queue ---------------------------------------------------------------------------


async def review(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    after = v.page_token(request.query.get("after", ""), "after") if request.query.get("after") else 0
    page = d.config.page_size
    rows = await d.flows.in_review(after_id=after, limit=page + 1)
    now = utcnow()
    items = [
        {
            "flow": f,
            "amount": views.money(f.amount, f.currency),
            "created": _fmt(f.created_at, request),
            "age": views.age((now - f.created_at).total_seconds()) if f.created_at else "",
            "in_review": views.age((now - f.updated_at).total_seconds()) if f.updated_at else "",
        }
        for f in rows[:page]
    ]
    next_after = v.next_page_token(rows[page - 1].id) if len(rows) > page else ""
    pending, _ = await d.operations.resolutions.pending(limit=100)
    resolutions = [
        {
            "r": r,
            "amount": views.money(r.amount, r.currency),
            "proposed": _fmt(r.proposed_at, request),
            "own": r.proposed_by == operator_of(request).name,
        }
        for r in pending
    ]
    return render(request, "review.html", items=items, next_after=next_after, resolutions=resolutions)


# --- channels --------------------------------------------------------------------------------


def _window_text(w: MaintenanceWindow) -> str:
    if w.starts_at is not None and w.ends_at is not None:
        start = datetime.fromtimestamp(w.starts_at, UTC).isoformat(timespec="minutes")
        end = datetime.fromtimestamp(w.ends_at, UTC).isoformat(timespec="minutes")
        return f"{start} – {end}"
    days = ",".join(_DAYS[day] for day in sorted(w.days)) or "–"
    offset = (
        f"UTC{'+' if w.utc_offset_min >= 0 else '-'}{abs(w.utc_offset_min) // 60:02d}:{abs(w.utc_offset_min) % 60:02d}"
    )
    return f"{days} {w.start_min // 60:02d}:{w.start_min % 60:02d}–{w.end_min // 60:02d}:{w.end_min % 60:02d} {offset}"


async def channels(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    router = d.planner.router
    status = {s.channel_id: s for s in router.snapshot(time.time())}
    positions = {p.channel: p for p in await d.positions.all()}
    items = []
    for channel_id, channel in sorted(d.registry.items()):
        profile = router.profile(channel_id)
        snap = status.get(channel_id)
        position = positions.get(channel_id)
        items.append(
            {
                "id": channel_id,
                "operations": sorted(op.value for op in channel.operations),
                "state": snap.state.value if snap else profile.state.value,
                "eliminated": bool(snap and snap.eliminated),
                "probing": bool(snap and snap.probing),
                "failure_share": views.percent(snap.recent_failure_share) if snap else "–",
                "estimates": [
                    {
                        "operation": e.operation.value,
                        "bank": e.bank_code or "*",
                        "estimate": views.percent(e.estimate),
                        "observations": round(e.observations, 1),
                    }
                    for e in (snap.estimates if snap else ())
                ],
                "limits": {
                    "min": views.money(profile.min_amount),
                    "max": views.money(profile.max_amount) if profile.max_amount else "–",
                    "card_attempts": profile.per_card_daily_attempts or "–",
                    "card_amount": views.money(profile.per_card_daily_amount) if profile.per_card_daily_amount else "–",
                },
                "fee": {
                    "fixed": views.money(profile.fee.fixed),
                    "rate": f"{profile.fee.rate_ppm / 10_000:g}%",
                    "minimum": views.money(profile.fee.minimum),
                    "maximum": views.money(profile.fee.maximum) if profile.fee.maximum is not None else "–",
                },
                "windows": [_window_text(w) for w in profile.maintenance],
                "position": position,
                "position_text": {
                    "balance": views.money(position.balance, position.currency),
                    "reserved": views.money(position.reserved, position.currency),
                    "available": views.money(position.available, position.currency),
                    "synced": _fmt(position.synced_at, request),
                }
                if position
                else None,
                "has_balance": "balance" in {op.value for op in channel.operations},
            }
        )
    return render(request, "channels.html", items=items, states=("enabled", "draining", "disabled"))


# --- outbox ----------------------------------------------------------------------------------


async def outbox(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    backlog = await d.reads.outbox_backlog(d.outbox_max_attempts)
    parked, waiting = await asyncio.gather(
        d.reads.outbox_unpublished(parked=True, max_attempts=d.outbox_max_attempts, after_id=0, limit=200),
        d.reads.outbox_unpublished(parked=False, max_attempts=d.outbox_max_attempts, after_id=0, limit=100),
    )
    now = utcnow()

    def rows(entries: list[Any]) -> list[dict[str, Any]]:
        return [
            {"e": e, "created": _fmt(e.created_at, request), "age": views.age((now - e.created_at).total_seconds())}
            for e in entries
        ]

    return render(
        request,
        "outbox.html",
        backlog=backlog,
        parked=rows(parked),
        waiting=rows(waiting),
        relay_enabled=d.relay_enabled,
        max_attempts=d.outbox_max_attempts,
    )


# --- audit log -------------------------------------------------------------------------------


async def audit(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    q = request.query
    values = {k: q.get(k, "").strip() for k in ("operator", "target", "from", "to")}
    v.text(values["target"], "target", max_len=128)
    v.text(values["operator"], "operator", max_len=64)
    first, last = views.parse_day(values["from"], "from"), views.parse_day(values["to"], "to")
    before = v.page_token(q["before"], "before") if q.get("before") else 0
    page = d.config.page_size
    entries = await d.audit.entries(
        AuditQuery(
            operator=values["operator"],
            target=values["target"],
            since=d.calendar.start_of(first) if first else None,
            until=d.calendar.start_of(last + timedelta(days=1)) if last else None,
            before_id=before,
            limit=page + 1,
        )
    )
    from urllib.parse import urlencode

    next_link = ""
    if len(entries) > page:
        next_link = urlencode(
            {**{k: x for k, x in values.items() if x}, "before": v.next_page_token(entries[page - 1].id)}
        )
    return render(
        request,
        "audit.html",
        form=values,
        entries=[
            {
                "e": e,
                "at": _fmt(e.created_at, request),
                "detail": scrub(", ".join(f"{k}={x}" for k, x in sorted(e.detail.items()))),
                "reason": scrub(e.reason),
            }
            for e in entries[:page]
        ],
        next_link=next_link,
    )
