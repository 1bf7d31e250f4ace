"""``paygate.v1.Reconciliation``: operators run, import, list and mark (reads: viewer; actions: operator).

Each action is audited (Run and Import here, ResolveDiscrepancy in the store's commit). The servicer
validates and converts; the use cases are :class:`gateway.recon.service.Reconciler`'s.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

import grpc

from gateway import validation as v
from gateway.api.auth import current_identity
from gateway.api.convert import ts
from gateway.domain import scrub
from gateway.errors import InvalidInput
from gateway.operations import reason_text
from gateway.plans.spec import due_date
from gateway.ports import AuditLog
from gateway.recon.model import CRITICAL, ItemRow, Resolution, RunRow, Trigger
from gateway.recon.service import Reconciler
from paygate.v1 import recon_pb2, recon_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]

MAX_IMPORT_BYTES = 1 << 20


def run_pb(run: RunRow) -> recon_pb2.ReconRun:
    statement, local = run.totals.get("statement", {}), run.totals.get("local", {})
    totals = []
    for kind in sorted(set(statement) | set(local)):
        s, o = statement.get(kind, {}), local.get(kind, {})
        totals.append(
            recon_pb2.KindTotals(
                kind=kind,
                statement_count=s.get("count", 0),
                statement_amount=s.get("amount", 0),
                statement_fee=s.get("fee", 0),
                local_count=o.get("count", 0),
                local_amount=o.get("amount", 0),
                local_fee=o.get("fee", 0),
            )
        )
    return recon_pb2.ReconRun(
        id=run.id,
        channel=run.channel,
        business_day=run.day.isoformat(),
        seq=run.seq,
        trigger=run.trigger,
        operator=run.operator,
        status=run.status.value,
        outcome=run.outcome,
        format=run.format,
        source=run.source,
        sha256=run.sha256,
        lines=run.lines,
        matched=run.matched,
        discrepancies=run.discrepancies,
        resolved=run.resolved,
        carried=run.carried,
        totals=totals,
        error=run.error,
        superseded_by=run.superseded_by or 0,
        started_at=ts(run.started_at),
        finished_at=ts(run.finished_at),
    )


def item_pb(item: ItemRow) -> recon_pb2.ReconItem:
    return recon_pb2.ReconItem(
        id=item.id,
        run_id=item.run_id,
        channel=item.channel,
        business_day=item.day.isoformat(),
        **{"class": item.item_class.value},
        critical=item.item_class in CRITICAL,
        channel_order_no=item.channel_order_no,
        flow_no=item.flow_no,
        operation=item.operation,
        local_status=item.local_status,
        local_amount=item.local_amount or 0,
        local_fee=item.local_fee or 0,
        has_local=bool(item.local_status),
        line_no=item.line_no or 0,
        line_status=item.line_status,
        line_amount=item.line_amount or 0,
        line_fee=item.line_fee or 0,
        line_txn_id=item.line_txn_id,
        has_line=bool(item.line_status),
        resolution=item.resolution.value,
        resolved_by=item.resolved_by,
        resolution_reason=scrub(item.resolution_reason),  # rows marked before reasons were scrubbed on the way in
        resolved_at=ts(item.resolved_at),
        created_at=ts(item.created_at),
    )


def _write_temp(content: bytes) -> str:
    handle, path = tempfile.mkstemp(prefix="paygate-import-")
    with os.fdopen(handle, "wb") as out:
        out.write(content)
    return path


class ReconciliationServicer(recon_pb2_grpc.ReconciliationServicer):
    def __init__(self, recon: Reconciler, audit: AuditLog) -> None:
        self.recon = recon
        self.audit = audit

    async def Run(self, request: recon_pb2.RunReconRequest, context: Ctx) -> recon_pb2.ReconRun:
        channel = v.pattern(request.channel, "channel", v.CHANNEL_ID, "a configured channel id")
        day = due_date(request.business_day, "business_day")
        reason = reason_text(request.reason)
        operator = current_identity().name
        await self.audit.record(operator, "recon_run", f"recon:{channel}:{day}", reason, {})
        return run_pb(await self.recon.reconcile(channel, day, trigger=Trigger.MANUAL, operator=operator))

    async def Import(self, request: recon_pb2.ImportStatementRequest, context: Ctx) -> recon_pb2.ReconRun:
        channel = v.pattern(request.channel, "channel", v.CHANNEL_ID, "a configured channel id")
        day = due_date(request.business_day, "business_day")
        fmt = v.pattern(request.format, "format", v.CHANNEL_ID, "a statement format name")
        reason = reason_text(request.reason)
        name = scrub(v.text(request.file_name, "file_name", max_len=200)) or "upload"
        if not request.content:
            raise InvalidInput("content", "is required")
        if len(request.content) > MAX_IMPORT_BYTES:
            raise InvalidInput("content", f"at most {MAX_IMPORT_BYTES} bytes here: use paygate recon import")
        operator = current_identity().name
        await self.audit.record(operator, "recon_import", f"recon:{channel}:{day}", reason, {"file": name})
        path = await asyncio.to_thread(_write_temp, request.content)
        try:
            run = await self.recon.import_file(channel, day, path, fmt, operator=operator, file_name=name)
        except InvalidInput as exc:
            raise InvalidInput("content" if exc.field == "file" else exc.field, exc.problem) from None
        finally:
            await asyncio.to_thread(os.unlink, path)
        return run_pb(run)

    async def GetRun(self, request: recon_pb2.GetReconRunRequest, context: Ctx) -> recon_pb2.ReconRun:
        if not request.run_id:
            raise InvalidInput("run_id", "is required")
        return run_pb(await self.recon.run(request.run_id))

    async def ListRuns(self, request: recon_pb2.ListReconRunsRequest, context: Ctx) -> recon_pb2.ListReconRunsResponse:
        channel = v.pattern(request.channel, "channel", v.CHANNEL_ID, "a channel id", required=False)
        day = due_date(request.business_day, "business_day") if request.business_day else None
        if request.limit > 500:
            raise InvalidInput("limit", "at most 500")
        runs = await self.recon.runs(channel=channel, day=day, limit=request.limit or 100)
        return recon_pb2.ListReconRunsResponse(runs=[run_pb(r) for r in runs])

    async def ListDiscrepancies(
        self, request: recon_pb2.ListReconDiscrepanciesRequest, context: Ctx
    ) -> recon_pb2.ListReconDiscrepanciesResponse:
        channel = v.pattern(request.channel, "channel", v.CHANNEL_ID, "a channel id", required=False)
        day = due_date(request.business_day, "business_day") if request.business_day else None
        if request.limit > 1000:
            raise InvalidInput("limit", "at most 1000")
        items = await self.recon.discrepancies(
            run_id=request.run_id or None,
            day=day,
            channel=channel,
            open_only=request.open_only,
            after_id=request.after_id,
            limit=request.limit or 200,
        )
        return recon_pb2.ListReconDiscrepanciesResponse(items=[item_pb(i) for i in items])

    async def ResolveDiscrepancy(
        self, request: recon_pb2.ResolveReconDiscrepancyRequest, context: Ctx
    ) -> recon_pb2.ReconItem:
        if not request.id:
            raise InvalidInput("id", "is required")
        try:
            resolution = Resolution(request.resolution)
        except ValueError:
            raise InvalidInput("resolution", "must be EXPLAINED or RESOLVED") from None
        reason = v.text(request.reason, "reason", max_len=500, required=True)
        marked = await self.recon.mark(request.id, resolution, operator=current_identity().name, reason=reason)
        return item_pb(marked)
