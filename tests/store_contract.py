"""The contract of the store ports, as tests that run against both implementations.

``tests/unit/test_fake_stores.py`` runs :class:`StoreContract` against the
in-memory fakes (tests/fakes/), ``tests/integration/test_store_contract.py``
against the MySQL stores on MariaDB: the unit tests of the use cases can
only trust the fakes because the same assertions hold for the real thing.

A subclass provides the ``stores`` fixture (a :class:`Stores`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest

from channels.contract import Outcome, OutcomeStatus
from gateway import ports
from gateway.domain import AgreementStatus, AttemptStatus, FlowKind, FlowStatus
from gateway.errors import FlowClosed, PositionShort, RefundExceeds
from gateway.store.rows import Applied, Created, Existing, FlowRow, NewAttempt, NewFlow, Source, utcnow

OK = Outcome(OutcomeStatus.SUCCEEDED, "OK", raw_code="00", channel_txn_id="T1")
BUSY = Outcome(OutcomeStatus.FAILED, "CHANNEL_BUSY", raw_code="96", safe_elsewhere=True)
DECLINED = Outcome(OutcomeStatus.FAILED, "INSUFFICIENT_FUNDS", raw_code="51", payer_attributable=True)
PENDING = Outcome(OutcomeStatus.PENDING, "PROCESSING", raw_code="P")


@dataclass
class Stores:
    """One database seen through the ports, plus what a test needs to look at it directly."""

    flows: ports.FlowStore
    queue: ports.PollQueue
    agreements: ports.AgreementStore
    positions: ports.PositionStore
    events: Callable[[int], Awaitable[list[str]]]  # a flow's outbox event types, in order
    queued: Callable[[int], Awaitable[int | None]]  # an attempt's poll-queue tries; None: no row


def new_flow(request_id: str, amount: int = 1_000, *, kind: FlowKind = FlowKind.WITHHOLD) -> NewFlow:
    return NewFlow("loans", request_id, kind, amount, "CNY", f"hash-{request_id}-{amount}", "acct", "6222****1234")


def first(channel: str = "sbx", *, reserve: bool = False) -> NewAttempt:
    return NewAttempt(channel, "payout" if reserve else "withhold", {"reason": "test"}, reserve_position=reserve)


async def created(stores: Stores, new: NewFlow, attempt: NewAttempt | None = None) -> FlowRow:
    creation = await stores.flows.create(new, attempt or first())
    assert isinstance(creation, Created)
    return creation.row


async def events(stores: Stores, flow_id: int) -> list[str]:
    return await stores.events(flow_id)


async def queued(stores: Stores, attempt_id: int) -> int | None:
    return await stores.queued(attempt_id)


class StoreContract:
    # --- creation ---------------------------------------------------------------------

    async def test_creation_is_idempotent_on_caller_and_request_id(self, stores: Stores) -> None:
        flow = await created(stores, new_flow("r-1"))
        assert flow.status is FlowStatus.PROCESSING
        [attempt] = flow.attempts
        assert attempt.status is AttemptStatus.SENDING and attempt.seq == 1 and attempt.channel_order_no
        again = await stores.flows.create(new_flow("r-1", 2_000), first())
        assert isinstance(again, Existing) and again.row.flow_no == flow.flow_no and again.row.amount == 1_000
        other_caller = NewFlow("collections", "r-1", FlowKind.WITHHOLD, 1_000, "CNY", "h", "acct", "6222****1234")
        assert isinstance(await stores.flows.create(other_caller, first()), Created)

    async def test_a_payout_whose_float_does_not_fit_writes_nothing(self, stores: Stores) -> None:
        await stores.positions.sync("pay", "CNY", 5_000)
        with pytest.raises(PositionShort):
            await stores.flows.create(new_flow("p-1", 6_000, kind=FlowKind.PAYOUT), first("pay", reserve=True))
        assert await stores.flows.by_request_id("loans", "p-1") is None
        position = await stores.positions.get("pay")
        assert position is not None and (position.balance, position.reserved) == (5_000, 0)

    async def test_a_reserved_payout_spends_its_float_on_success_and_frees_it_on_failure(self, stores: Stores) -> None:
        await stores.positions.sync("pay", "CNY", 10_000)
        paid = await created(stores, new_flow("p-1", 3_000, kind=FlowKind.PAYOUT), first("pay", reserve=True))
        failed = await created(stores, new_flow("p-2", 4_000, kind=FlowKind.PAYOUT), first("pay", reserve=True))
        position = await stores.positions.get("pay")
        assert position is not None and (position.balance, position.reserved) == (10_000, 7_000)
        await stores.flows.apply_outcome(paid.attempts[0].id, OK, Source.RESPONSE)
        await stores.flows.apply_outcome(failed.attempts[0].id, DECLINED, Source.RESPONSE)
        position = await stores.positions.get("pay")
        assert position is not None and (position.balance, position.reserved) == (7_000, 0)

    async def test_refunds_cannot_exceed_the_original(self, stores: Stores) -> None:
        original = await created(stores, new_flow("w-1", 1_000))
        await stores.flows.apply_outcome(original.attempts[0].id, OK, Source.RESPONSE)
        refund = NewFlow("loans", "rf-1", FlowKind.REFUND, 600, "CNY", "h1", original_flow_id=original.id)
        assert isinstance(await stores.flows.create(refund, first()), Created)
        too_much = NewFlow("loans", "rf-2", FlowKind.REFUND, 401, "CNY", "h2", original_flow_id=original.id)
        with pytest.raises(RefundExceeds):
            await stores.flows.create(too_much, first())
        assert await stores.flows.by_request_id("loans", "rf-2") is None
        stored = await stores.flows.by_id(original.id)
        assert stored is not None and stored.refund_reserved == 600

    # --- the transition -----------------------------------------------------------------

    async def test_pending_is_queued_and_reported_again_changes_nothing(self, stores: Stores) -> None:
        flow = await created(stores, new_flow("r-1"))
        attempt_id = flow.attempts[0].id
        result = await stores.flows.apply_outcome(attempt_id, PENDING, Source.RESPONSE, poll_due_in_s=60)
        assert result.applied is Applied.TRANSITIONED and result.attempt is not None
        assert result.attempt.status is AttemptStatus.PENDING and not result.flow_finished
        assert await queued(stores, attempt_id) == 0
        again = await stores.flows.apply_outcome(attempt_id, PENDING, Source.POLL, poll_due_in_s=60)
        assert again.applied is Applied.STILL_PENDING
        assert await events(stores, flow.id) == []

    async def test_a_terminal_result_finishes_the_flow_once_and_never_changes(self, stores: Stores) -> None:
        flow = await created(stores, new_flow("r-1"))
        attempt_id = flow.attempts[0].id
        await stores.flows.apply_outcome(attempt_id, PENDING, Source.RESPONSE, poll_due_in_s=60)
        result = await stores.flows.apply_outcome(attempt_id, OK, Source.CALLBACK)
        assert result.applied is Applied.TRANSITIONED and result.flow_finished
        assert result.flow is not None and result.flow.status is FlowStatus.SUCCEEDED
        assert await queued(stores, attempt_id) is None
        assert (await stores.flows.apply_outcome(attempt_id, OK, Source.POLL)).applied is Applied.NOOP
        assert (await stores.flows.apply_outcome(attempt_id, PENDING, Source.POLL)).applied is Applied.NOOP
        contradiction = await stores.flows.apply_outcome(attempt_id, DECLINED, Source.POLL)
        assert contradiction.applied is Applied.DISCREPANCY
        await stores.flows.apply_outcome(attempt_id, DECLINED, Source.POLL)  # the same one again: recorded once
        stored = await stores.flows.by_id(flow.id)
        assert stored is not None and stored.status is FlowStatus.SUCCEEDED
        assert stored.attempts[0].status is AttemptStatus.SUCCEEDED and stored.channel_txn_id == "T1"
        assert await events(stores, flow.id) == ["FLOW_RESULT", "DISCREPANCY"]

    async def test_an_unknown_attempt_is_unknown(self, stores: Stores) -> None:
        assert (await stores.flows.apply_outcome(987_654, OK, Source.CALLBACK)).applied is Applied.UNKNOWN

    async def test_failover_leaves_the_flow_open_until_the_last_attempt_ends(self, stores: Stores) -> None:
        flow = await created(stores, new_flow("r-1"))
        result = await stores.flows.apply_outcome(
            flow.attempts[0].id, BUSY, Source.RESPONSE, finish_flow_on_failure=False
        )
        assert result.applied is Applied.TRANSITIONED and not result.flow_finished
        second = await stores.flows.add_attempt(flow, first("other"))
        assert second.seq == 2 and second.channel_order_no != flow.attempts[0].channel_order_no
        assert [a.id for a in flow.attempts] == [flow.attempts[0].id, second.id]
        assert not await stores.flows.finish_from_attempt(flow.attempts[0].id)  # not the last attempt
        assert await stores.flows.stranded_failovers(utcnow() + timedelta(seconds=5)) == []  # one is in flight
        await stores.flows.apply_outcome(second.id, BUSY, Source.RESPONSE, finish_flow_on_failure=False)
        assert await stores.flows.stranded_failovers(utcnow() + timedelta(seconds=5)) == [second.id]
        assert await stores.flows.finish_from_attempt(second.id)
        assert not await stores.flows.finish_from_attempt(second.id)
        stored = await stores.flows.by_id(flow.id)
        assert stored is not None and stored.status is FlowStatus.FAILED and stored.failure_code == "CHANNEL_BUSY"
        assert await events(stores, flow.id) == ["FLOW_RESULT"]
        with pytest.raises(FlowClosed):
            await stores.flows.add_attempt(stored, first("third"))

    async def test_review_keeps_the_flow_processing_and_happens_once(self, stores: Stores) -> None:
        flow = await created(stores, new_flow("r-1"))
        await stores.flows.apply_outcome(flow.attempts[0].id, PENDING, Source.RESPONSE, poll_due_in_s=60)
        attempt = await stores.flows.attempt_by_id(flow.attempts[0].id)
        assert attempt is not None
        assert await stores.flows.mark_needs_review(attempt, "schedule exhausted")
        assert not await stores.flows.mark_needs_review(attempt, "schedule exhausted")
        stored = await stores.flows.by_id(flow.id)
        assert stored is not None and stored.status is FlowStatus.PROCESSING and stored.needs_review
        assert await queued(stores, attempt.id) is None
        assert await events(stores, flow.id) == ["FLOW_NEEDS_REVIEW"]
        assert [f.flow_no for f in await stores.flows.in_review(after_id=0, limit=10)] == [flow.flow_no]
        assert await stores.flows.review_count() == 1
        assert await stores.queue.requeue_unresolved(utcnow() + timedelta(seconds=5)) == 0

    async def test_an_operator_resolution_is_final(self, stores: Stores) -> None:
        flow = await created(stores, new_flow("r-1"))
        await stores.flows.apply_outcome(flow.attempts[0].id, PENDING, Source.RESPONSE, poll_due_in_s=60)
        assert await stores.flows.resolve(flow, FlowStatus.SUCCEEDED, "ops", "bank statement", "TX-9")
        assert not await stores.flows.resolve(flow, FlowStatus.FAILED, "ops", "changed my mind", "")
        late = await stores.flows.apply_outcome(flow.attempts[0].id, DECLINED, Source.POLL)
        assert late.applied is Applied.DISCREPANCY
        stored = await stores.flows.by_id(flow.id)
        assert stored is not None and stored.status is FlowStatus.SUCCEEDED
        assert stored.attempts[0].status is AttemptStatus.SUCCEEDED
        assert await events(stores, flow.id) == ["FLOW_RESULT", "DISCREPANCY"]

    # --- the poll queue -----------------------------------------------------------------

    async def test_a_claim_is_a_lease_only_its_owner_reschedules(self, stores: Stores) -> None:
        flow = await created(stores, new_flow("r-1"))
        attempt_id = flow.attempts[0].id
        await stores.flows.apply_outcome(attempt_id, PENDING, Source.RESPONSE, poll_due_in_s=0)
        [claim] = await stores.queue.claim(owner="a", limit=10, lease_s=60)
        assert (claim.attempt_id, claim.tries, claim.expedited) == (attempt_id, 0, False)
        assert await stores.queue.claim(owner="b", limit=10, lease_s=60) == []
        await stores.queue.reschedule(attempt_id, owner="b", tries=5, due_at=utcnow())
        assert await queued(stores, attempt_id) == 0  # not b's row
        await stores.queue.reschedule(attempt_id, owner="a", tries=1, due_at=utcnow() - timedelta(seconds=1))
        assert await queued(stores, attempt_id) == 1
        assert [c.attempt_id for c in await stores.queue.claim(owner="b", limit=10, lease_s=60)] == [attempt_id]

    async def test_an_expedited_query_is_rate_limited_and_free(self, stores: Stores) -> None:
        flow = await created(stores, new_flow("r-1"))
        attempt_id = flow.attempts[0].id
        await stores.flows.apply_outcome(attempt_id, PENDING, Source.RESPONSE, poll_due_in_s=3600)
        assert await stores.queue.claim(owner="a", limit=10, lease_s=60) == []
        assert await stores.queue.expedite(attempt_id, "sbx", min_interval_s=60)
        assert not await stores.queue.expedite(attempt_id, "sbx", min_interval_s=60)
        [claim] = await stores.queue.claim(owner="a", limit=10, lease_s=60)
        assert claim.expedited and claim.tries == 0
        assert await stores.queue.due_count() == 0

    async def test_recovery_requeues_what_has_no_definite_result(self, stores: Stores) -> None:
        sending = await created(stores, new_flow("r-1"))
        pending = await created(stores, new_flow("r-2"))
        await stores.flows.apply_outcome(pending.attempts[0].id, PENDING, Source.RESPONSE, poll_due_in_s=3600)
        await stores.queue.remove(pending.attempts[0].id)  # lost its row
        done = await created(stores, new_flow("r-3"))
        await stores.flows.apply_outcome(done.attempts[0].id, OK, Source.RESPONSE)
        assert await stores.queue.requeue_unresolved(utcnow() + timedelta(seconds=5)) == 2
        assert await queued(stores, sending.attempts[0].id) == 0
        assert await queued(stores, pending.attempts[0].id) == 0
        assert await queued(stores, done.attempts[0].id) is None
        assert await stores.queue.requeue_unresolved(utcnow() + timedelta(seconds=5)) == 0

    # --- agreements -----------------------------------------------------------------------

    async def test_agreements_are_idempotent_and_move_forward_only(self, stores: Stores) -> None:
        fields = {
            "caller": "loans",
            "request_id": "s-1",
            "request_hash": "h",
            "channel": "sbx",
            "account_hash": "acct",
            "account_masked": "6222****1234",
            "holder_masked": "张*",
            "bank_code": "ICBC",
        }
        creation = await stores.agreements.create(**fields)
        assert isinstance(creation, Created)
        row = creation.row
        again = await stores.agreements.create(**fields)
        assert isinstance(again, Existing) and again.row.agreement_no == row.agreement_no
        assert await stores.agreements.transition(row, AgreementStatus.ACTIVE, agreement_ref="AG-1")
        assert not await stores.agreements.transition(row, AgreementStatus.SIGN_FAILED, failure_code="X")
        assert await stores.agreements.active_refs("loans", "acct") == {"sbx": "AG-1"}
        assert await stores.agreements.active_refs("collections", "acct") == {}
        assert await stores.agreements.transition(row, AgreementStatus.REVOKED)
        assert not await stores.agreements.transition(row, AgreementStatus.ACTIVE)
        stored = await stores.agreements.by_no("loans", row.agreement_no)
        assert stored is not None and stored.status is AgreementStatus.REVOKED and stored.agreement_ref == "AG-1"
