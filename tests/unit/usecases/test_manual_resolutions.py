"""gateway/resolutions.py over the in-memory stores: the maker-checker state machine, one edge at a time."""

from __future__ import annotations

import pytest

from gateway.domain import FlowStatus
from gateway.errors import NotFound, PreconditionFailed, SelfApproval
from gateway.resolutions import SYSTEM, ManualResolutions
from gateway.store.rows import Created, FlowRow, ResolutionRow, ResolutionStatus
from tests.fakes import FakeAuditLog, FakeFlowStore, Tables
from tests.fakes.resolutions import FakeResolutions
from tests.resolution_contract import ResolutionContract, ResolutionStores
from tests.store_contract import first, new_flow

THRESHOLD = 50_000


class TestFakeResolutions(ResolutionContract):
    @pytest.fixture
    def rstores(self) -> ResolutionStores:
        tables = Tables()
        return ResolutionStores(FakeFlowStore(tables), FakeResolutions(tables), FakeAuditLog(tables))


class World:
    def __init__(self) -> None:
        self.tables = Tables()
        self.flows = FakeFlowStore(self.tables)
        self.store = FakeResolutions(self.tables)
        self.woken = 0
        self.uc = ManualResolutions(self.flows, self.store, approval_above=THRESHOLD, on_resolved=self._wake)

    def _wake(self) -> None:
        self.woken += 1

    async def flow(self, request_id: str, amount: int) -> FlowRow:
        creation = await self.flows.create(new_flow(request_id, amount), first())
        assert isinstance(creation, Created)
        return creation.row

    async def status(self, flow: FlowRow) -> FlowStatus:
        row = await self.flows.by_id(flow.id)
        assert row is not None
        return row.status

    def actions(self, flow: FlowRow) -> list[tuple[str, str]]:
        return [(a[0], a[1]) for a in self.tables.audit if a[2] == flow.flow_no]

    async def proposed(self, amount: int = 100_000, maker: str = "maker") -> tuple[FlowRow, ResolutionRow]:
        flow = await self.flow(f"f-{len(self.tables.flows)}", amount)
        outcome = await self.uc.resolve(flow, FlowStatus.SUCCEEDED, "T1", "statement shows it", maker)
        assert outcome.pending is not None and outcome.flow.status is FlowStatus.PROCESSING
        return flow, outcome.pending


@pytest.fixture
def w() -> World:
    return World()


async def test_at_the_threshold_one_operator_resolves(w: World) -> None:
    flow = await w.flow("small", THRESHOLD)
    outcome = await w.uc.resolve(flow, FlowStatus.FAILED, "", "customer says not charged", "maker")
    assert outcome.pending is None and outcome.flow.status is FlowStatus.FAILED and w.woken == 1
    assert w.actions(flow) == [("maker", "resolve_flow")]


async def test_above_it_the_maker_only_proposes_and_another_approver_applies(w: World) -> None:
    flow, pending = await w.proposed()
    assert await w.status(flow) is FlowStatus.PROCESSING and w.woken == 0
    with pytest.raises(SelfApproval):
        await w.uc.approve(pending.id, "maker", "")
    row, resolved = await w.uc.approve(pending.id, "checker", "checked")
    assert row.status is ResolutionStatus.APPROVED and row.decided_by == "checker"
    assert resolved.status is FlowStatus.SUCCEEDED and resolved.channel_txn_id == "T1" and w.woken == 1
    assert w.actions(flow) == [
        ("maker", "propose_resolution"),
        ("checker", "approve_resolution"),
        ("checker", "resolve_flow"),
    ]
    with pytest.raises(PreconditionFailed, match="already APPROVED"):
        await w.uc.approve(pending.id, "checker2", "")


async def test_one_open_resolution_per_flow(w: World) -> None:
    flow, pending = await w.proposed()
    with pytest.raises(PreconditionFailed, match=f"resolution {pending.id} by maker is already pending"):
        await w.uc.resolve(flow, FlowStatus.FAILED, "", "other idea", "maker2")


async def test_an_approval_cut_short_is_finished_by_approving_again(w: World) -> None:
    flow, pending = await w.proposed()
    # as if the process died between the approval's commit and the resolution
    await w.store.decide(pending, ResolutionStatus.APPROVED, "checker", "", action="approve_resolution", detail={})
    assert await w.status(flow) is FlowStatus.PROCESSING
    with pytest.raises(SelfApproval):
        await w.uc.approve(pending.id, "maker", "")
    _, resolved = await w.uc.approve(pending.id, "checker2", "")
    assert resolved.status is FlowStatus.SUCCEEDED


async def test_a_flow_that_finished_meanwhile_voids_the_resolution(w: World) -> None:
    flow, pending = await w.proposed()
    assert await w.flows.resolve(flow, FlowStatus.FAILED, "poller", "the channel answered", "")
    with pytest.raises(PreconditionFailed, match="voided"):
        await w.uc.approve(pending.id, "checker", "")
    row = await w.store.get(pending.id)
    assert row is not None and row.status is ResolutionStatus.VOIDED and row.decided_by == SYSTEM
    assert await w.status(flow) is FlowStatus.FAILED, "nothing applied over the flow's own result"
    assert w.actions(flow)[-1] == (SYSTEM, "void_resolution")


async def test_a_flow_finishing_between_approval_and_resolution_voids_it(w: World) -> None:
    flow, pending = await w.proposed()
    real_resolve = w.flows.resolve

    async def finish_first(*args: object) -> bool:
        await real_resolve(flow, FlowStatus.FAILED, "poller", "the channel answered", "")
        return await real_resolve(*args)  # type: ignore[arg-type]

    w.flows.resolve = finish_first  # type: ignore[method-assign]
    with pytest.raises(PreconditionFailed, match="before resolution"):
        await w.uc.approve(pending.id, "checker", "")
    row = await w.store.get(pending.id)
    assert row is not None and row.status is ResolutionStatus.VOIDED
    assert [a for _, a in w.actions(flow)] == [
        "propose_resolution",
        "approve_resolution",
        "resolve_flow",
        "void_resolution",
    ]


async def test_reject_and_listing(w: World) -> None:
    flow, pending = await w.proposed()
    other_flow, other = await w.proposed()
    assert [r.id for r in (await w.uc.pending())[0]] == [pending.id, other.id]
    rejected = await w.uc.reject(pending.id, "checker", "no debit on the statement")
    assert rejected.status is ResolutionStatus.REJECTED and await w.status(flow) is FlowStatus.PROCESSING
    with pytest.raises(PreconditionFailed):
        await w.uc.reject(pending.id, "checker", "again")
    # the other flow finishes on its own: listing voids its resolution rather than show it
    assert await w.flows.resolve(other_flow, FlowStatus.SUCCEEDED, "poller", "x", "")
    assert await w.uc.pending() == ([], None)
    everything, _ = await w.uc.pending(include_decided=True)
    assert [(r.id, r.status) for r in everything] == [
        (pending.id, ResolutionStatus.REJECTED),
        (other.id, ResolutionStatus.VOIDED),
    ]
    assert [r.id for r in (await w.uc.pending(flow_no=flow.flow_no, include_decided=True))[0]] == [pending.id]


async def test_pages_of_pending_resolutions_go_on_past_voided_ones(w: World) -> None:
    made = [await w.proposed() for _ in range(4)]
    for flow, _ in made[:2]:  # the first page's flows finish on their own
        assert await w.flows.resolve(flow, FlowStatus.SUCCEEDED, "poller", "x", "")
    page, after = await w.uc.pending(limit=2)
    assert page == [] and after == made[1][1].id
    page, after = await w.uc.pending(limit=2, after_id=after)
    assert [r.id for r in page] == [made[2][1].id, made[3][1].id] and after is None


async def test_rejecting_a_resolution_whose_flow_finished_voids_it(w: World) -> None:
    flow, pending = await w.proposed()
    assert await w.flows.resolve(flow, FlowStatus.SUCCEEDED, "poller", "x", "")
    assert (await w.uc.reject(pending.id, "checker", "no")).status is ResolutionStatus.VOIDED


async def test_unknown_and_finished(w: World) -> None:
    with pytest.raises(NotFound):
        await w.uc.approve(999, "checker", "")
    flow = await w.flow("done", 10)
    await w.uc.resolve(flow, FlowStatus.FAILED, "", "x", "maker")
    done = await w.flows.by_id(flow.id)
    assert done is not None
    with pytest.raises(PreconditionFailed, match="already FAILED"):
        await w.uc.resolve(done, FlowStatus.SUCCEEDED, "", "x", "maker")
