"""The console's changes: each goes through :class:`gateway.operations.Operations`, the use cases the
admin API uses, with the operator's name from the session (the role was checked by the server).

Each answers with a redirect and a one-time notice, saying what was done or why it was not.
"""

from __future__ import annotations

from aiohttp import web

from gateway.console import views
from gateway.console.server import deps, notice_redirect, operator_of
from gateway.domain import FlowStatus, scrub
from gateway.errors import GatewayError, InvalidInput
from routing.engine import ChannelState

_STATES = {"enabled": ChannelState.ENABLED, "draining": ChannelState.DRAINING, "disabled": ChannelState.DISABLED}


def _failed(request: web.Request, location: str, exc: GatewayError) -> web.HTTPSeeOther:
    return notice_redirect(request, location, "error.failed", error=True, detail=scrub(str(exc))[:300])


async def _form(request: web.Request) -> dict[str, str]:
    form = await request.post()
    return {k: str(val) for k, val in form.items() if isinstance(val, str)}


async def requery(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    flow_no = request.match_info["flow_no"]
    back = f"/flows/{flow_no}" if (await _form(request)).get("back") == "flow" else "/review"
    try:
        done = await d.operations.requery_flow(flow_no, operator_of(request).name)
    except GatewayError as exc:
        raise _failed(request, back, exc) from None
    raise notice_redirect(request, back, "review.done_requery", n=done.queued)


async def resolve(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    form = await _form(request)
    flow_no = request.match_info["flow_no"]
    back = f"/flows/{flow_no}" if form.get("back") == "flow" else "/review"
    try:
        status_text = form.get("status", "")
        if status_text not in (FlowStatus.SUCCEEDED.value, FlowStatus.FAILED.value):
            raise InvalidInput("status", "must be SUCCEEDED or FAILED")
        outcome = await d.operations.resolve_flow(
            flow_no,
            FlowStatus(status_text),
            form.get("channel_txn_id", "").strip(),
            operator_of(request).name,
            form.get("reason", ""),
        )
    except GatewayError as exc:
        raise _failed(request, back, exc) from None
    if outcome.pending is not None:
        raise notice_redirect(request, back, "review.done_pending", flow_no=outcome.flow.flow_no)
    flow = outcome.flow
    raise notice_redirect(request, back, "review.done_resolve", flow_no=flow.flow_no, status=flow.status.value)


def _resolution_id(raw: str) -> int:
    if not raw.isdigit() or len(raw) > 19:
        raise InvalidInput("resolution_id", "must be a resolution number")
    return int(raw)


async def approve(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    form = await _form(request)
    try:
        row, flow = await d.operations.approve_resolution(
            _resolution_id(request.match_info["resolution_id"]), operator_of(request).name, form.get("reason", "")
        )
    except GatewayError as exc:
        raise _failed(request, "/review", exc) from None
    raise notice_redirect(request, "/review", "review.done_approve", id=row.id, flow_no=flow.flow_no)


async def reject(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    form = await _form(request)
    try:
        row = await d.operations.reject_resolution(
            _resolution_id(request.match_info["resolution_id"]), operator_of(request).name, form.get("reason", "")
        )
    except GatewayError as exc:
        raise _failed(request, "/review", exc) from None
    raise notice_redirect(request, "/review", "review.done_reject", id=row.id, status=row.status.value)


async def channel_state(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    form = await _form(request)
    channel = request.match_info["channel"]
    try:
        state = _STATES.get(form.get("state", ""))
        if state is None:
            raise InvalidInput("state", "must be enabled, draining or disabled")
        await d.operations.set_channel_state(channel, state, operator_of(request).name, form.get("reason", ""))
    except GatewayError as exc:
        raise _failed(request, "/channels", exc) from None
    raise notice_redirect(request, "/channels", "channels.done_state", channel=channel, state=state.value)


async def position_adjust(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    form = await _form(request)
    channel = request.match_info["channel"]
    try:
        delta = views.parse_yuan(form.get("delta", ""), "delta")
        if delta is None:
            raise InvalidInput("delta", "is required")
        await d.operations.adjust_position(channel, delta, operator_of(request).name, form.get("reason", ""))
    except GatewayError as exc:
        raise _failed(request, "/channels", exc) from None
    raise notice_redirect(request, "/channels", "channels.done_adjust", channel=channel)


async def position_resync(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    form = await _form(request)
    channel = request.match_info["channel"]
    try:
        await d.operations.resync_position(channel, operator_of(request).name, form.get("reason", ""))
    except GatewayError as exc:
        raise _failed(request, "/channels", exc) from None
    raise notice_redirect(request, "/channels", "channels.done_resync", channel=channel)


async def outbox_release(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    form = await request.post()
    try:
        ids = []
        for raw in form.getall("id", []):
            if not isinstance(raw, str) or not raw.isdigit() or len(raw) > 19:
                raise InvalidInput("id", "must be event row ids")
            ids.append(int(raw))
        released = await d.operations.release_parked_events(ids, operator_of(request).name, str(form.get("reason", "")))
    except GatewayError as exc:
        raise _failed(request, "/outbox", exc) from None
    raise notice_redirect(request, "/outbox", "outbox.done_release", n=released)
