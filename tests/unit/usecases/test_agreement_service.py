"""AgreementService over an in-memory store and a channel of our own: signing, confirming, revoking."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from channels.contract import ChannelRejected, ChannelUnavailable, Operation
from gateway import metrics
from gateway.agreements import SignParams
from gateway.domain import AgreementStatus, account_hash
from gateway.errors import IdempotencyConflict, InvalidInput, NotFound, PreconditionFailed, Unavailable
from gateway.store.rows import AgreementRow, utcnow
from gateway.validation import canonical_hash
from tests.fakes import CALLER, CARD, HASH_KEY, FakeChannel, FakeGateway


def sign_params(channel: str = "bank-a", *, phone: str = "13800138000", bank: str = "ICBC") -> SignParams:
    return SignParams(channel, CARD, "张三", "11010519491231002X", phone, bank)


@pytest.fixture
def gw() -> FakeGateway:
    return FakeGateway(
        FakeChannel("bank-a", banks=frozenset({"ICBC"})),
        FakeChannel("no-agreements", operations=frozenset({Operation.PAYOUT})),
    )


async def signed(gw: FakeGateway, request_id: str = "s-1") -> AgreementRow:
    row = await gw.agreements.sign(CALLER, request_id, sign_params())
    assert row.status is AgreementStatus.AWAITING_CONFIRMATION
    return row


async def test_signing_records_the_agreement_masked_and_asks_the_channel_once(gw: FakeGateway) -> None:
    row = await signed(gw)
    assert row.sign_ref == f"sign-{row.agreement_no}"
    [stored] = gw.tables.agreements.values()
    assert stored.account_masked == "***************3445" and stored.holder_masked == "张*"
    assert CARD not in repr(stored) and stored.account_hash != CARD
    [(kind, request)] = gw.channels["bank-a"].calls
    assert kind == "sign" and request.account_no == CARD  # the full number goes to the channel, once


async def test_signing_again_with_the_same_key_and_parameters_replays(gw: FakeGateway) -> None:
    first = await signed(gw)
    again = await gw.agreements.sign(CALLER, "s-1", sign_params())
    assert again.agreement_no == first.agreement_no
    assert gw.channels["bank-a"].kinds() == ["sign"]


async def test_signing_again_with_the_same_key_and_other_parameters_is_a_conflict(gw: FakeGateway) -> None:
    await signed(gw)
    with pytest.raises(IdempotencyConflict):
        await gw.agreements.sign(CALLER, "s-1", sign_params(phone="13900139000"))
    assert len(gw.tables.agreements) == 1 and gw.channels["bank-a"].kinds() == ["sign"]


async def test_another_phone_with_the_same_last_four_digits_is_a_conflict_too(gw: FakeGateway) -> None:
    await signed(gw)  # 13800138000: the SMS went there
    with pytest.raises(IdempotencyConflict):
        await gw.agreements.sign(CALLER, "s-1", sign_params(phone="13900138000"))
    assert len(gw.tables.agreements) == 1 and gw.channels["bank-a"].kinds() == ["sign"]


async def test_a_request_recorded_with_the_old_hash_of_the_phone_still_replays(gw: FakeGateway) -> None:
    first = await signed(gw)
    params = sign_params()
    old = SignParams(
        params.channel,
        account_hash(HASH_KEY, params.account_no),
        params.holder_name,
        account_hash(HASH_KEY, params.id_no),
        params.phone[-4:],
        params.bank_code,
    )
    [(key, row)] = gw.tables.agreements.items()
    gw.tables.agreements[key] = dataclasses.replace(row, request_hash=canonical_hash("SIGN", old))
    again = await gw.agreements.sign(CALLER, "s-1", params)
    assert again.agreement_no == first.agreement_no and gw.channels["bank-a"].kinds() == ["sign"]


async def test_a_concurrent_duplicate_that_lost_the_insert_is_answered_from_the_winner(gw: FakeGateway) -> None:
    winner = await signed(gw)
    real = gw.agreement_store.by_request_id

    async def read_before_the_winner_committed(caller: str, request_id: str) -> AgreementRow | None:
        gw.agreement_store.by_request_id = real  # type: ignore[method-assign]
        return None

    gw.agreement_store.by_request_id = read_before_the_winner_committed  # type: ignore[method-assign]
    again = await gw.agreements.sign(CALLER, "s-1", sign_params())
    assert again.agreement_no == winner.agreement_no
    assert gw.channels["bank-a"].kinds() == ["sign"]
    with pytest.raises(IdempotencyConflict):
        gw.agreement_store.by_request_id = read_before_the_winner_committed  # type: ignore[method-assign]
        await gw.agreements.sign(CALLER, "s-1", sign_params(phone="13900139000"))


async def test_a_channel_refusal_records_sign_failed(gw: FakeGateway) -> None:
    gw.channels["bank-a"].sign_error = ChannelRejected("bank-a", "CARD_NOT_SUPPORTED", "no")
    row = await gw.agreements.sign(CALLER, "s-1", sign_params())
    assert row.status is AgreementStatus.SIGN_FAILED and row.failure_code == "CARD_NOT_SUPPORTED"


async def test_an_unreachable_channel_records_sign_failed_and_is_unavailable(gw: FakeGateway) -> None:
    gw.channels["bank-a"].sign_error = ChannelUnavailable("bank-a", "connection refused")
    with pytest.raises(Unavailable, match="retry with a new request_id"):
        await gw.agreements.sign(CALLER, "s-1", sign_params())
    [stored] = gw.tables.agreements.values()
    assert stored.status is AgreementStatus.SIGN_FAILED and stored.failure_code == "CHANNEL_UNAVAILABLE"


async def test_the_channel_is_picked_by_bank_and_capability(gw: FakeGateway) -> None:
    row = await gw.agreements.sign(CALLER, "s-1", sign_params(channel=""))
    assert row.channel == "bank-a"
    with pytest.raises(PreconditionFailed, match="no channel signs agreements for bank ABC"):
        await gw.agreements.sign(CALLER, "s-2", sign_params(channel="", bank="ABC"))
    with pytest.raises(PreconditionFailed, match="does not sign"):
        await gw.agreements.sign(CALLER, "s-3", sign_params(channel="no-agreements"))
    with pytest.raises(InvalidInput):
        await gw.agreements.sign(CALLER, "s-4", sign_params(channel="nowhere"))


async def test_confirming_activates_once_and_a_wrong_code_changes_nothing(gw: FakeGateway) -> None:
    row = await signed(gw)
    with pytest.raises(PreconditionFailed, match="rejected by the channel"):
        await gw.agreements.confirm(CALLER, row.agreement_no, "000000")
    assert gw.tables.agreements[row.id].status is AgreementStatus.AWAITING_CONFIRMATION
    active = await gw.agreements.confirm(CALLER, row.agreement_no, "123456")
    assert active.status is AgreementStatus.ACTIVE and active.agreement_ref == f"agr-{row.sign_ref}"
    again = await gw.agreements.confirm(CALLER, row.agreement_no, "123456")
    assert again.status is AgreementStatus.ACTIVE
    assert gw.channels["bank-a"].kinds().count("confirm") == 2  # the harmless second confirm never calls
    refs = await gw.agreement_store.active_refs(CALLER, account_hash(HASH_KEY, CARD))
    assert refs == {"bank-a": active.agreement_ref}


async def test_another_callers_agreement_is_not_found(gw: FakeGateway) -> None:
    row = await signed(gw)
    with pytest.raises(NotFound):
        await gw.agreements.confirm("another-lender", row.agreement_no, "123456")
    with pytest.raises(NotFound):
        await gw.agreements.revoke("another-lender", row.agreement_no)


async def test_revoking_an_active_agreement_tells_the_channel(gw: FakeGateway) -> None:
    row = await signed(gw)
    await gw.agreements.confirm(CALLER, row.agreement_no, "123456")
    revoked = await gw.agreements.revoke(CALLER, row.agreement_no)
    assert revoked.status is AgreementStatus.REVOKED and gw.channels["bank-a"].kinds()[-1] == "revoke"
    assert await gw.agreement_store.active_refs(CALLER, account_hash(HASH_KEY, CARD)) == {}


async def test_revoking_what_the_channel_no_longer_knows_still_revokes(gw: FakeGateway) -> None:
    row = await signed(gw)
    await gw.agreements.confirm(CALLER, row.agreement_no, "123456")
    gw.channels["bank-a"].revoke_error = ChannelRejected("bank-a", "AGREEMENT_NOT_FOUND", "gone")
    assert (await gw.agreements.revoke(CALLER, row.agreement_no)).status is AgreementStatus.REVOKED


async def test_a_refused_revoke_keeps_the_agreement_active(gw: FakeGateway) -> None:
    row = await signed(gw)
    await gw.agreements.confirm(CALLER, row.agreement_no, "123456")
    gw.channels["bank-a"].revoke_error = ChannelRejected("bank-a", "HAS_OPEN_ORDERS", "not now")
    with pytest.raises(PreconditionFailed, match="refused to revoke"):
        await gw.agreements.revoke(CALLER, row.agreement_no)
    assert gw.tables.agreements[row.id].status is AgreementStatus.ACTIVE


async def test_a_sign_failed_agreement_cannot_be_revoked_or_confirmed(gw: FakeGateway) -> None:
    gw.channels["bank-a"].sign_error = ChannelRejected("bank-a", "CARD_NOT_SUPPORTED", "no")
    row = await gw.agreements.sign(CALLER, "s-1", sign_params())
    with pytest.raises(PreconditionFailed):
        await gw.agreements.revoke(CALLER, row.agreement_no)
    with pytest.raises(PreconditionFailed):
        await gw.agreements.confirm(CALLER, row.agreement_no, "123456")


# --- a channel call and its local update are one step; what is left behind is recovered ----------


async def test_a_caller_hanging_up_after_the_channel_confirmed_still_gets_the_agreement_recorded(
    gw: FakeGateway,
) -> None:
    row = await signed(gw)
    gw.channels["bank-a"].confirm_delay_s = 0.05
    rpc = asyncio.ensure_future(gw.agreements.confirm(CALLER, row.agreement_no, "123456"))
    while "confirm" not in gw.channels["bank-a"].kinds():
        await asyncio.sleep(0.001)
    rpc.cancel()  # the client goes while the channel is confirming
    with pytest.raises(asyncio.CancelledError):
        await rpc
    assert await gw.agreements.stop(grace_s=5.0) == 0  # the call finished, nothing cancelled
    stored = gw.tables.agreements[row.id]
    assert stored.status is AgreementStatus.ACTIVE and stored.agreement_ref == f"agr-{row.sign_ref}"


async def test_a_cancelled_revoke_is_still_recorded(gw: FakeGateway) -> None:
    row = await signed(gw)
    await gw.agreements.confirm(CALLER, row.agreement_no, "123456")
    gw.channels["bank-a"].revoke_error = None
    real_revoke = gw.channels["bank-a"].revoke_agreement

    async def slow_revoke(agreement_ref: str) -> None:
        await asyncio.sleep(0.05)
        await real_revoke(agreement_ref)

    gw.channels["bank-a"].revoke_agreement = slow_revoke  # type: ignore[method-assign]
    rpc = asyncio.ensure_future(gw.agreements.revoke(CALLER, row.agreement_no))
    await asyncio.sleep(0.01)
    rpc.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rpc
    await gw.agreements.stop(grace_s=5.0)
    assert gw.tables.agreements[row.id].status is AgreementStatus.REVOKED


async def test_an_agreement_left_awaiting_after_a_confirm_was_sent_is_marked_for_review(gw: FakeGateway) -> None:
    row = await signed(gw)
    # the process died between sending the confirm and recording its answer
    await gw.agreement_store.mark_confirm_sent(row)
    assert await gw.agreements.recover() == 0  # not yet: the call may still be running somewhere
    gw.tables.agreements[row.id].confirm_sent_at = utcnow() - timedelta(seconds=gw.agreements.review_after_s + 1)
    before = metrics.AGREEMENTS_TO_REVIEW.labels(channel="bank-a")._value.get()  # type: ignore[attr-defined]
    assert await gw.agreements.recover() == 1
    assert await gw.agreements.recover() == 0  # once
    stored = gw.tables.agreements[row.id]
    assert stored.status is AgreementStatus.AWAITING_CONFIRMATION and stored.needs_review
    assert metrics.AGREEMENTS_TO_REVIEW.labels(channel="bank-a")._value.get() == before + 1  # type: ignore[attr-defined]
    # the caller confirming again completes it (the channel answers the same agreement) and clears the mark
    confirmed = await gw.agreements.confirm(CALLER, row.agreement_no, "123456")
    assert confirmed.status is AgreementStatus.ACTIVE and not gw.tables.agreements[row.id].needs_review


async def test_a_refused_code_leaves_nothing_to_recover(gw: FakeGateway) -> None:
    row = await signed(gw)
    with pytest.raises(PreconditionFailed, match="SMS_CODE_INVALID"):
        await gw.agreements.confirm(CALLER, row.agreement_no, "000000")
    assert gw.tables.agreements[row.id].confirm_sent_at is None
    gw.tables.agreements[row.id].updated_at = utcnow() - timedelta(days=1)
    assert await gw.agreements.recover() == 0


async def test_an_unreachable_channel_during_confirm_keeps_the_mark_for_recovery(gw: FakeGateway) -> None:
    row = await signed(gw)

    async def lost(sign_ref: str, sms_code: str) -> None:
        raise ChannelUnavailable("bank-a", "timed out after sending")

    gw.channels["bank-a"].confirm_agreement = lost  # type: ignore[method-assign,assignment]
    with pytest.raises(Unavailable):
        await gw.agreements.confirm(CALLER, row.agreement_no, "123456")
    assert gw.tables.agreements[row.id].confirm_sent_at is not None
