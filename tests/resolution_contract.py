"""The contract of the resolution store and the audit log's queries, run against the fakes and MySQL.

``tests/unit/usecases/test_manual_resolutions.py`` runs :class:`ResolutionContract` on the fakes,
``tests/integration/test_resolution_store.py`` on MariaDB. A subclass provides ``rstores``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from gateway import ports
from gateway.domain import FlowStatus
from gateway.store.rows import AuditQuery, Created, Existing, FlowRow, ResolutionStatus, utcnow
from tests.store_contract import first, new_flow


@dataclass
class ResolutionStores:
    flows: ports.FlowStore
    resolutions: ports.ResolutionStore
    audit: ports.AuditLog


async def a_flow(stores: ResolutionStores, request_id: str, amount: int = 200_000) -> FlowRow:
    creation = await stores.flows.create(new_flow(request_id, amount), first())
    assert isinstance(creation, Created)
    return creation.row


class ResolutionContract:
    async def test_one_open_resolution_per_flow(self, rstores: ResolutionStores) -> None:
        flow = await a_flow(rstores, "r-1")
        first = await rstores.resolutions.propose(flow, FlowStatus.SUCCEEDED, "T1", "statement shows it", "maker")
        assert isinstance(first, Created)
        row = first.row
        assert (row.flow_no, row.amount, row.currency, row.target, row.status, row.proposed_by) == (
            flow.flow_no,
            200_000,
            "CNY",
            FlowStatus.SUCCEEDED,
            ResolutionStatus.PENDING,
            "maker",
        )
        again = await rstores.resolutions.propose(flow, FlowStatus.FAILED, "", "other idea", "maker2")
        assert isinstance(again, Existing) and again.row.id == row.id
        other = await rstores.resolutions.propose(await a_flow(rstores, "r-2"), FlowStatus.FAILED, "", "x", "m")
        assert isinstance(other, Created) and other.row.id != row.id

    async def test_decisions_are_compare_and_set_and_audited(self, rstores: ResolutionStores) -> None:
        flow = await a_flow(rstores, "r-3")
        proposed = await rstores.resolutions.propose(flow, FlowStatus.FAILED, "", "not charged", "maker")
        assert isinstance(proposed, Created)
        row = proposed.row
        approved = await rstores.resolutions.decide(
            row, ResolutionStatus.APPROVED, "checker", "ok", action="approve_resolution", detail={}
        )
        assert approved is not None and (approved.status, approved.decided_by) == (ResolutionStatus.APPROVED, "checker")
        assert approved.decided_at is not None and approved.decision_reason == "ok"
        # the same decision from a stale read loses
        assert (
            await rstores.resolutions.decide(
                row, ResolutionStatus.REJECTED, "checker2", "no", action="reject_resolution", detail={}
            )
            is None
        )
        stored = await rstores.resolutions.get(row.id)
        assert stored is not None and stored.status is ResolutionStatus.APPROVED
        # an approved resolution still holds its flow
        assert isinstance(await rstores.resolutions.propose(flow, FlowStatus.FAILED, "", "x", "m"), Existing)
        entries = await rstores.audit.entries(AuditQuery(target=flow.flow_no))
        assert [(e.operator, e.action) for e in entries] == [
            ("checker", "approve_resolution"),
            ("maker", "propose_resolution"),
        ]
        assert entries[1].detail["resolution_id"] == row.id and entries[1].reason == "not charged"

    async def test_a_rejected_or_voided_resolution_frees_the_flow(self, rstores: ResolutionStores) -> None:
        flow = await a_flow(rstores, "r-4")
        for to in (ResolutionStatus.REJECTED, ResolutionStatus.VOIDED):
            proposed = await rstores.resolutions.propose(flow, FlowStatus.FAILED, "", "x", "maker")
            assert isinstance(proposed, Created)
            decided = await rstores.resolutions.decide(proposed.row, to, "checker", "no", action="x", detail={})
            assert decided is not None and decided.status is to
        assert isinstance(await rstores.resolutions.propose(flow, FlowStatus.FAILED, "", "x", "maker"), Created)

    async def test_listing_filters_and_pages(self, rstores: ResolutionStores) -> None:
        flows = [await a_flow(rstores, f"l-{i}") for i in range(3)]
        ids = []
        for flow in flows:
            proposed = await rstores.resolutions.propose(flow, FlowStatus.SUCCEEDED, "", "x", "maker")
            assert isinstance(proposed, Created)
            ids.append(proposed.row.id)
        first = await rstores.resolutions.get(ids[0])
        assert first is not None
        await rstores.resolutions.decide(
            first, ResolutionStatus.REJECTED, "c", "no", action="reject_resolution", detail={}
        )
        pending = frozenset({ResolutionStatus.PENDING})
        listed = await rstores.resolutions.list(statuses=pending, flow_no="", after_id=0, limit=10)
        assert [r.id for r in listed] == ids[1:]
        assert [
            r.id for r in await rstores.resolutions.list(statuses=frozenset(), flow_no="", after_id=0, limit=10)
        ] == ids
        assert [
            r.id for r in await rstores.resolutions.list(statuses=frozenset(), flow_no="", after_id=ids[0], limit=1)
        ] == [ids[1]]
        by_flow = await rstores.resolutions.list(statuses=frozenset(), flow_no=flows[2].flow_no, after_id=0, limit=10)
        assert [r.id for r in by_flow] == [ids[2]]
        assert all(r.flow_status is FlowStatus.PROCESSING for r in listed)

    async def test_a_row_reports_its_flows_status_now(self, rstores: ResolutionStores) -> None:
        flow = await a_flow(rstores, "r-5")
        proposed = await rstores.resolutions.propose(flow, FlowStatus.FAILED, "", "x", "maker")
        assert isinstance(proposed, Created)
        assert await rstores.flows.resolve(flow, FlowStatus.SUCCEEDED, "someone", "the channel said so", "T9")
        row = await rstores.resolutions.get(proposed.row.id)
        assert row is not None and row.flow_status is FlowStatus.SUCCEEDED and row.status is ResolutionStatus.PENDING

    async def test_audit_queries(self, rstores: ResolutionStores) -> None:
        before = utcnow() - timedelta(seconds=1)
        for i in range(5):
            await rstores.audit.record(f"op{i % 2}", "requery_flow", f"F{i % 3}", "re-query", {"i": i})
        newest = await rstores.audit.entries(AuditQuery(limit=10))
        assert [e.detail["i"] for e in newest] == [4, 3, 2, 1, 0]
        assert [e.detail["i"] for e in await rstores.audit.entries(AuditQuery(operator="op1"))] == [3, 1]
        assert [e.detail["i"] for e in await rstores.audit.entries(AuditQuery(target="F0"))] == [3, 0]
        assert [e.detail["i"] for e in await rstores.audit.entries(AuditQuery(target="F0", operator="op0"))] == [0]
        page = await rstores.audit.entries(AuditQuery(limit=2, before_id=newest[1].id))
        assert [e.detail["i"] for e in page] == [2, 1]
        assert len(await rstores.audit.entries(AuditQuery(since=before))) == 5
        assert await rstores.audit.entries(AuditQuery(until=before)) == []
        assert await rstores.audit.entries(AuditQuery(since=utcnow() + timedelta(minutes=1))) == []
