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
from datetime import date, timedelta

import pytest

from channels.contract import Outcome, OutcomeStatus
from gateway import ports
from gateway.domain import AgreementStatus, AttemptStatus, FlowKind, FlowStatus
from gateway.errors import BelowReserved, CardLimitReached, FlowClosed, PositionMoved, PositionShort, RefundExceeds
from gateway.store.rows import (
    Applied,
    CardLimit,
    Created,
    Existing,
    FlowRow,
    NewAttempt,
    NewFlow,
    RecoveryScope,
    Source,
    utcnow,
)

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
    replicas: ports.ReplicaStore
    channel_states: ports.ChannelStateStore
    flows_of: Callable[[str], ports.FlowStore]  # the flow store of a replica run (stamps its incarnation)
    silence: Callable[[str, float], Awaitable[None]]  # the run's last heartbeat was that many seconds ago


def new_flow(request_id: str, amount: int = 1_000, *, kind: FlowKind = FlowKind.WITHHOLD) -> NewFlow:
    return NewFlow("loans", request_id, kind, amount, "CNY", f"hash-{request_id}-{amount}", "acct", "6222****1234")


def first(channel: str = "sbx", *, reserve: bool = False) -> NewAttempt:
    return NewAttempt(channel, "payout" if reserve else "withhold", {"reason": "test"}, reserve_position=reserve)


async def created(
    stores: Stores, new: NewFlow, attempt: NewAttempt | None = None, *, store: ports.FlowStore | None = None
) -> FlowRow:
    creation = await (store or stores.flows).create(new, attempt or first())
    assert isinstance(creation, Created)
    return creation.row


def agreement_fields(request_id: str) -> dict[str, str]:
    return {
        "caller": "loans",
        "request_id": request_id,
        "request_hash": "h",
        "channel": "sbx",
        "account_hash": "acct",
        "account_masked": "6222****1234",
        "holder_masked": "张*",
        "bank_code": "ICBC",
    }


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
        await stores.positions.sync("pay", "CNY", 5_000, seen=None)
        with pytest.raises(PositionShort):
            await stores.flows.create(new_flow("p-1", 6_000, kind=FlowKind.PAYOUT), first("pay", reserve=True))
        assert await stores.flows.by_request_id("loans", "p-1") is None
        position = await stores.positions.get("pay")
        assert position is not None and (position.balance, position.reserved) == (5_000, 0)

    async def test_a_reserved_payout_spends_its_float_on_success_and_frees_it_on_failure(self, stores: Stores) -> None:
        await stores.positions.sync("pay", "CNY", 10_000, seen=None)
        paid = await created(stores, new_flow("p-1", 3_000, kind=FlowKind.PAYOUT), first("pay", reserve=True))
        failed = await created(stores, new_flow("p-2", 4_000, kind=FlowKind.PAYOUT), first("pay", reserve=True))
        position = await stores.positions.get("pay")
        assert position is not None and (position.balance, position.reserved) == (10_000, 7_000)
        await stores.flows.apply_outcome(paid.attempts[0].id, OK, Source.RESPONSE)
        await stores.flows.apply_outcome(failed.attempts[0].id, DECLINED, Source.RESPONSE)
        position = await stores.positions.get("pay")
        assert position is not None and (position.balance, position.reserved) == (7_000, 0)

    async def test_a_card_limit_is_counted_with_the_attempt_and_refuses_the_one_over(self, stores: Stores) -> None:
        limit = CardLimit(date(2026, 12, 1), max_attempts=2, max_amount=2_500)
        limited = NewAttempt("sbx", "withhold", {"reason": "test"}, card_limit=limit)
        await created(stores, new_flow("w-1", 1_000), limited)
        with pytest.raises(CardLimitReached):  # 1 000 + 1 600 is over the amount
            await stores.flows.create(new_flow("w-2", 1_600), limited)
        assert await stores.flows.by_request_id("loans", "w-2") is None
        await created(stores, new_flow("w-3", 1_500), limited)
        with pytest.raises(CardLimitReached):  # the third attempt of the day
            await stores.flows.create(new_flow("w-4", 1), limited)
        other_day = NewAttempt("sbx", "withhold", card_limit=CardLimit(date(2026, 12, 2), 2, 2_500))
        await created(stores, new_flow("w-5", 1_000), other_day)
        busy = await created(stores, new_flow("w-6", 1_000), first("other"))
        await stores.flows.apply_outcome(busy.attempts[0].id, BUSY, Source.RESPONSE, finish_flow_on_failure=False)
        with pytest.raises(CardLimitReached):  # a failover attempt counts too
            await stores.flows.add_attempt(busy, limited)

    async def test_a_sync_writes_only_over_the_position_it_read(self, stores: Stores) -> None:
        created_row = await stores.positions.sync("pay", "CNY", 10_000, seen=None)
        assert (created_row.balance, created_row.reserved) == (10_000, 0)
        with pytest.raises(PositionMoved):  # it exists now
            await stores.positions.sync("pay", "CNY", 9_000, seen=None)
        seen = await stores.positions.get("pay")
        assert seen is not None
        paid = await created(stores, new_flow("p-1", 3_000, kind=FlowKind.PAYOUT), first("pay", reserve=True))
        await stores.flows.apply_outcome(paid.attempts[0].id, OK, Source.RESPONSE)  # settles after `seen`
        with pytest.raises(PositionMoved):  # writing 10 000 now would undo the 3 000 paid out
            await stores.positions.sync("pay", "CNY", 10_000, seen=seen)
        fresh = await stores.positions.get("pay")
        assert fresh is not None and fresh.balance == 7_000
        with pytest.raises(PositionMoved):  # never another currency
            await stores.positions.sync("pay", "USD", 7_000, seen=fresh)
        synced = await stores.positions.sync("pay", "CNY", 6_500, seen=fresh)
        assert (synced.currency, synced.balance) == ("CNY", 6_500)

    async def test_an_adjustment_never_cuts_below_what_payouts_reserved(self, stores: Stores) -> None:
        await stores.positions.sync("pay", "CNY", 10_000, seen=None)
        await created(stores, new_flow("p-1", 6_000, kind=FlowKind.PAYOUT), first("pay", reserve=True))
        with pytest.raises(BelowReserved) as refused:
            await stores.positions.adjust("pay", -4_001, "ops", "cut")
        assert (refused.value.balance, refused.value.reserved) == (10_000, 6_000)
        cut = await stores.positions.adjust("pay", -4_000, "ops", "cut")
        assert cut is not None and (cut.balance, cut.reserved) == (6_000, 6_000)
        assert await stores.positions.adjust("nobody", 1, "ops", "x") is None

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

    async def test_recovery_leaves_a_sending_attempt_in_review_to_its_operator(self, stores: Stores) -> None:
        flow = await created(stores, new_flow("r-1"))  # SENDING: the channel never said it has the order
        attempt = flow.attempts[0]
        assert await stores.flows.mark_needs_review(attempt, "schedule exhausted")
        assert await stores.queue.requeue_unresolved(utcnow() + timedelta(seconds=5)) == 0
        assert await queued(stores, attempt.id) is None

    # --- several replicas -----------------------------------------------------------------

    async def test_a_restart_of_a_replica_replaces_its_earlier_run(self, stores: Stores) -> None:
        assert await stores.replicas.register("RUN-A1", "gw-a") == 0
        assert await stores.replicas.register("RUN-B1", "gw-b") == 0
        assert await stores.replicas.heartbeat("RUN-A1")
        assert await stores.replicas.register("RUN-A2", "gw-a") == 1  # A1 was never stopped: a crash
        assert not await stores.replicas.heartbeat("RUN-A1")  # replaced: it must not look alive again
        assert [r.incarnation for r in await stores.replicas.alive(10)] == ["RUN-B1", "RUN-A2"]
        await stores.silence("RUN-B1", 30)
        assert [r.incarnation for r in await stores.replicas.alive(10)] == ["RUN-A2"]
        await stores.replicas.stop("RUN-A2")
        assert await stores.replicas.alive(10) == []

    async def test_recovery_leaves_a_live_replicas_sending_attempt_alone(self, stores: Stores) -> None:
        await stores.replicas.register("RUN-A1", "gw-a")
        await stores.replicas.register("RUN-B1", "gw-b")
        flow = await created(stores, new_flow("r-1"), store=stores.flows_of("RUN-A1"))
        attempt_id = flow.attempts[0].id
        b, a = RecoveryScope("RUN-B1", 10), RecoveryScope("RUN-A1", 10)
        now = utcnow() + timedelta(seconds=5)
        assert await stores.queue.requeue_unresolved(now, b) == 0  # A is sending it
        assert await stores.queue.requeue_unresolved(utcnow() - timedelta(seconds=60), a) == 0  # A's own, young
        await stores.silence("RUN-A1", 30)  # A died
        assert await stores.queue.requeue_unresolved(utcnow() - timedelta(seconds=60), b) == 1  # at once
        assert await queued(stores, attempt_id) == 0

    async def test_a_replicas_own_and_its_earlier_runs_attempts_are_recovered(self, stores: Stores) -> None:
        await stores.replicas.register("RUN-A1", "gw-a")
        old = await created(stores, new_flow("r-1"), store=stores.flows_of("RUN-A1"))
        legacy = await created(stores, new_flow("r-2"), store=stores.flows_of(""))  # before runs were recorded
        await stores.replicas.register("RUN-A2", "gw-a")  # A restarted
        mine = await created(stores, new_flow("r-3"), store=stores.flows_of("RUN-A2"))
        a2 = RecoveryScope("RUN-A2", 10)
        assert await stores.queue.requeue_unresolved(utcnow() - timedelta(seconds=60), a2) == 2
        assert await queued(stores, old.attempts[0].id) == 0 and await queued(stores, legacy.attempts[0].id) == 0
        assert await queued(stores, mine.attempts[0].id) is None  # its own, by the cutoff
        assert await stores.queue.requeue_unresolved(utcnow() + timedelta(seconds=5), a2) == 1

    async def test_recovery_never_finishes_a_failover_a_live_replica_is_making(self, stores: Stores) -> None:
        await stores.replicas.register("RUN-A1", "gw-a")
        await stores.replicas.register("RUN-B1", "gw-b")
        a_flows = stores.flows_of("RUN-A1")
        flow = await created(stores, new_flow("r-1"), store=a_flows)
        attempt_id = flow.attempts[0].id
        await a_flows.apply_outcome(attempt_id, BUSY, Source.RESPONSE, finish_flow_on_failure=False)
        b = RecoveryScope("RUN-B1", 10)
        later = utcnow() + timedelta(seconds=5)
        assert await stores.flows.stranded_failovers(later, scope=b) == []  # A is choosing the next channel
        assert await stores.flows.stranded_failovers(later, scope=RecoveryScope("RUN-A1", 10)) == [attempt_id]
        assert await stores.flows.stranded_failovers(later) == [attempt_id]  # no scope: one process
        await stores.replicas.stop("RUN-A1")  # A stopped (cleanly) without recording it
        assert await stores.flows.stranded_failovers(utcnow() - timedelta(seconds=60), scope=b) == [attempt_id]

    async def test_each_channel_state_write_has_a_new_version(self, stores: Stores) -> None:
        first = await stores.channel_states.set("sbx", "disabled", operator="ops", reason="incident")
        second = await stores.channel_states.set("sbx", "disabled", operator="ops", reason="again")
        other = await stores.channel_states.set("alt", "draining", operator="ops", reason="maintenance")
        assert (first.version, second.version, other.version) == (1, 2, 1)
        assert sorted(await stores.channel_states.current(), key=lambda r: r.channel) == [other, second]
        assert await stores.channel_states.all() == {"sbx": "disabled", "alt": "draining"}

    # --- agreements -----------------------------------------------------------------------

    async def test_agreements_are_idempotent_and_move_forward_only(self, stores: Stores) -> None:
        fields = agreement_fields("s-1")
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

    async def test_an_agreement_confirm_is_recorded_as_sent_and_found_by_recovery(self, stores: Stores) -> None:
        creation = await stores.agreements.create(**agreement_fields("s-2"))
        assert isinstance(creation, Created)
        row = creation.row
        later = utcnow() + timedelta(seconds=5)
        assert await stores.agreements.unconfirmed_since(later) == []
        await stores.agreements.mark_confirm_sent(row)
        [found] = await stores.agreements.unconfirmed_since(later)
        assert found.agreement_no == row.agreement_no and found.confirm_sent_at is not None
        assert await stores.agreements.unconfirmed_since(utcnow() - timedelta(seconds=60)) == []
        assert await stores.agreements.mark_needs_review(found)
        assert not await stores.agreements.mark_needs_review(found)
        assert await stores.agreements.unconfirmed_since(later) == []
        assert await stores.agreements.transition(found, AgreementStatus.ACTIVE, agreement_ref="AG-2")
        stored = await stores.agreements.by_no("loans", row.agreement_no)
        assert stored is not None and stored.status is AgreementStatus.ACTIVE and not stored.needs_review
        await stores.agreements.clear_confirm_sent(row)  # no longer awaiting: changes nothing
        assert not await stores.agreements.mark_needs_review(stored)
