"""The sandbox simulator and adapter over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from channels.contract import (
    CallbackNotice,
    CallbackRejected,
    ChannelRejected,
    ChannelUnavailable,
    Operation,
    OrderRef,
    Outcome,
    OutcomeStatus,
    PayoutOrder,
    RefundOrder,
    SignRequest,
    WithholdOrder,
)
from channels.registry import ChannelSpec
from channels.sandbox import wire
from channels.sandbox.adapter import SandboxChannel, build
from channels.sandbox.simulator import SandboxSimulator, create
from channels.simkit import Behaviour, CallbackPolicy, HttpServer
from devstack.processes import free_port

CARD = "6222020200112233445"
FAST_CALLBACKS = CallbackPolicy(max_attempts=4, retry_delay_s=0.05, backoff=1.5, timeout_s=1.0)


@dataclass
class Receiver:
    """The gateway's callback endpoint, reduced to what the adapter offers."""

    channel: SandboxChannel | None = None
    fail_first: int = 0
    hits: int = 0
    notices: list[CallbackNotice] = field(default_factory=list)
    rejected: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.read()
        if self.hits <= self.fail_first:
            return web.Response(status=500, text="busy")
        assert self.channel is not None
        try:
            self.notices.append(self.channel.parse_callback(request.headers, body))
            reply = self.channel.callback_reply(True)
        except CallbackRejected:
            self.rejected += 1
            reply = self.channel.callback_reply(False)
        return web.Response(status=reply.status, body=reply.body, content_type=reply.content_type)


@dataclass
class Bank:
    sim: SandboxSimulator
    channel: SandboxChannel
    receiver: Receiver
    notify_url: str

    async def agreement(self, account: str = CARD, sign_order_no: str = "sign-1") -> str:
        started = await self.channel.sign_agreement(
            SignRequest(sign_order_no, account, "张三", "110101199001011234", "13800138000", "ICBC")
        )
        confirmed = await self.channel.confirm_agreement(started.sign_ref, self.sim.sms_code(started.sign_ref))
        return confirmed.agreement_ref

    async def withhold(self, order_no: str, amount: int, agreement_ref: str, account: str = CARD) -> Outcome:
        return await self.channel.withhold(
            WithholdOrder(order_no, amount, "CNY", agreement_ref, account, "ICBC", notify_url=self.notify_url)
        )

    async def query(self, order_no: str, amount: int = 0) -> Outcome:
        return await self.channel.query(OrderRef(order_no, Operation.WITHHOLD, amount, "CNY"))

    async def admin(self, method: str, path: str, payload: object = None) -> tuple[int, object]:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, self.sim.base_url + path, json=payload) as response:
                return response.status, await response.json()


async def _bank(behaviour: Behaviour | None = None, *, secret: str | None = None, **sim_kw: object) -> Bank:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/callbacks/sandbox", receiver.handle)
    server = HttpServer(app)
    base = await server.start()
    notify_url = base + "/callbacks/sandbox"
    behaviour = behaviour or Behaviour(timeout_hold_s=3.0, settle_after_ms=(20, 40))
    sim = create(behaviour, notify_url=notify_url, callback_policy=FAST_CALLBACKS, **sim_kw)
    await sim.start()
    settings = {**sim.adapter_settings(), "timeout_s": 1.0, "connect_timeout_s": 1.0}
    if secret is not None:
        settings["secret"] = secret
    channel = build(ChannelSpec("sbx-1", "sandbox", settings))
    await channel.start()
    receiver.channel = channel
    bank = Bank(sim, channel, receiver, notify_url)
    bank._server = server  # type: ignore[attr-defined]
    return bank


async def _close(bank: Bank) -> None:
    await bank.channel.stop()
    await bank.sim.stop()
    await bank._server.stop()  # type: ignore[attr-defined]


@pytest.fixture
async def bank() -> AsyncIterator[Bank]:
    b = await _bank()
    try:
        yield b
    finally:
        await _close(b)


async def _settled(bank: Bank) -> None:
    async with asyncio.timeout(5):
        await bank.sim.settled()


# --- magic amounts -------------------------------------------------------------

S, F, P = OutcomeStatus.SUCCEEDED, OutcomeStatus.FAILED, OutcomeStatus.PENDING

# cents: (status, code, payer_attributable, safe_elsewhere, debits at once, final status, final code, debits at end)
MAGIC_CASES = {
    0: (S, "OK", False, False, 1, S, "OK", 1),
    1: (F, "INSUFFICIENT_FUNDS", True, False, 0, F, "INSUFFICIENT_FUNDS", 0),
    2: (F, "ACCOUNT_FROZEN", True, False, 0, F, "ACCOUNT_FROZEN", 0),
    3: (F, "CHANNEL_BUSY", False, True, 0, F, "CHANNEL_BUSY", 0),
    4: (F, "BANK_NOT_SUPPORTED", False, True, 0, F, "BANK_NOT_SUPPORTED", 0),
    5: (P, "PROCESSING", False, False, 0, S, "OK", 1),
    6: (P, "PROCESSING", False, False, 0, F, "INSUFFICIENT_FUNDS", 0),
    7: (P, "TIMEOUT", False, False, 1, S, "OK", 1),
    8: (P, "CHANNEL_5XX", False, False, 1, S, "OK", 1),
    9: (P, "UNMAPPED", False, False, 1, S, "OK", 1),
}


@pytest.mark.parametrize("cents", sorted(MAGIC_CASES))
async def test_magic_amounts(bank: Bank, cents: int) -> None:
    status, code, payer, safe, debits_now, final_status, final_code, debits_end = MAGIC_CASES[cents]
    agreement = await bank.agreement()
    amount = 12_300 + cents
    before = bank.sim.ledger.balance(CARD)

    outcome = await bank.withhold("o-magic", amount, agreement)

    assert (outcome.status, outcome.code) == (status, code)
    assert (outcome.payer_attributable, outcome.safe_elsewhere) == (payer, safe)
    assert outcome.unmapped is (cents == 9)
    assert bank.sim.ledger.debit_count("o-magic") == debits_now
    await _settled(bank)
    final = await bank.query("o-magic", amount)
    assert (final.status, final.code) == (final_status, final_code)
    assert bank.sim.ledger.debit_count("o-magic") == debits_end
    assert bank.sim.ledger.balance(CARD) == before - amount * debits_end
    if status is S:
        assert outcome.channel_txn_id == final.channel_txn_id and outcome.amount == amount
    if cents in (5, 6):  # settled later: the gateway hears about it by callback
        assert [(n.channel_order_no, n.outcome.code) for n in bank.receiver.notices] == [("o-magic", final_code)]
        assert bank.receiver.notices[0].amount == amount


async def test_magic_applies_to_payouts_and_keeps_the_float(bank: Bank) -> None:
    float_before = bank.sim.ledger.merchant_balance
    busy = await bank.channel.payout(PayoutOrder("p-busy", 50_003, "CNY", CARD, "张三", "ICBC"))
    assert (busy.status, busy.code, busy.safe_elsewhere) == (F, "CHANNEL_BUSY", True)
    paid = await bank.channel.payout(PayoutOrder("p-ok", 50_000, "CNY", CARD, "张三", "ICBC"))
    assert paid.status is S
    assert bank.sim.ledger.merchant_balance == float_before - 50_000
    assert (await bank.channel.balance()).available == float_before - 50_000


async def test_magic_off_succeeds(bank: Bank) -> None:
    bank.sim.behaviour.magic = False
    agreement = await bank.agreement()
    assert (await bank.withhold("o-plain", 12_301, agreement)).status is S


# --- at most one debit ---------------------------------------------------------


async def test_repeat_returns_the_same_result_and_never_debits_twice(bank: Bank) -> None:
    agreement = await bank.agreement()
    first = await bank.withhold("o-dup", 20_000, agreement)
    second = await bank.withhold("o-dup", 20_000, agreement)
    assert first.status is S and second.status is S
    assert first.channel_txn_id == second.channel_txn_id
    assert bank.sim.ledger.debit_count("o-dup") == 1

    conflict = await bank.withhold("o-dup", 20_500, agreement)
    assert (conflict.status, conflict.code) == (P, "ORDER_NO_CONFLICT")
    assert bank.sim.ledger.debits_by_order() == {"o-dup": 1}


@pytest.mark.parametrize("amount", [30_000, 30_005])
async def test_fifty_concurrent_identical_requests_debit_once(bank: Bank, amount: int) -> None:
    agreement = await bank.agreement()
    before = bank.sim.ledger.balance(CARD)
    outcomes = await asyncio.gather(*(bank.withhold("o-herd", amount, agreement) for _ in range(50)))
    assert len({(o.status, o.code, o.channel_txn_id) for o in outcomes}) == 1
    await _settled(bank)
    assert bank.sim.ledger.debits_by_order() == {"o-herd": 1}
    assert bank.sim.ledger.balance(CARD) == before - amount
    assert len(bank.sim.ledger.entries()) == 1


async def test_timeout_debits_answers_pending_and_the_truth_comes_by_query_or_repeat(bank: Bank) -> None:
    agreement = await bank.agreement()
    started = time.monotonic()
    outcome = await bank.withhold("o-slow", 40_007, agreement)
    assert time.monotonic() - started < 2.5  # the client's timeout, not the bank's hold
    assert (outcome.status, outcome.code, outcome.safe_elsewhere) == (P, "TIMEOUT", False)
    assert bank.sim.ledger.debit_count("o-slow") == 1
    assert (await bank.query("o-slow")).status is S
    # The retry of the same call (same order no) gets the real answer at once, no second debit.
    assert (await bank.withhold("o-slow", 40_007, agreement)).status is S
    assert bank.sim.ledger.debit_count("o-slow") == 1


# --- refusals before anything executes -----------------------------------------


async def test_outage_refuses_before_processing(bank: Bank) -> None:
    agreement = await bank.agreement()
    status, _ = await bank.admin("POST", "/_admin/behaviour", {"outage": True})
    assert status == 200

    outcome = await bank.withhold("o-out", 10_000, agreement)
    assert (outcome.status, outcome.code, outcome.safe_elsewhere) == (F, "CHANNEL_MAINTENANCE", True)
    assert outcome.raw_code == wire.RawCode.MAINTENANCE
    assert bank.sim.ledger.entries() == [] and bank.sim.ledger.movements() == []
    with pytest.raises(ChannelUnavailable):
        await bank.channel.balance()

    await bank.admin("POST", "/_admin/behaviour", {"outage": False})
    assert (await bank.withhold("o-out", 10_000, agreement)).status is S
    assert bank.sim.ledger.debit_count("o-out") == 1


async def test_outage_window(bank: Bank) -> None:
    agreement = await bank.agreement()
    now = time.time()
    bank.sim.behaviour.update({"outage_windows": [[now - 1, now + 60]]})
    assert (await bank.withhold("o-win", 10_000, agreement)).code == "CHANNEL_MAINTENANCE"
    assert bank.sim.ledger.entries() == []


async def test_connection_refused_is_safe_elsewhere() -> None:
    spec = ChannelSpec(
        "sbx-x", "sandbox", {"base_url": f"http://127.0.0.1:{free_port()}", "merchant_id": "m", "secret": "s"}
    )
    async with build(spec) as channel:
        outcome = await channel.withhold(WithholdOrder("o-x", 100, "CNY", "A1", CARD, "ICBC"))
        assert (outcome.status, outcome.code, outcome.safe_elsewhere) == (F, "CONNECTION_FAILED", True)
        with pytest.raises(ChannelUnavailable):
            await channel.balance()


async def test_bank_down_then_up_on_the_same_port_keeps_its_ledger(bank: Bank) -> None:
    agreement = await bank.agreement()
    assert (await bank.withhold("o-before", 10_000, agreement)).status is S
    port = int(bank.sim.base_url.rsplit(":", 1)[1])
    await bank.sim.stop()
    down = await bank.withhold("o-down", 10_000, agreement)
    assert (down.status, down.code, down.safe_elsewhere) == (F, "CONNECTION_FAILED", True)
    await bank.sim.start(port=port)
    assert (await bank.query("o-before")).status is S
    assert (await bank.withhold("o-down", 10_000, agreement)).status is S
    assert bank.sim.ledger.debits_by_order() == {"o-before": 1, "o-down": 1}


async def test_close_tombstones_an_unknown_order(bank: Bank) -> None:
    agreement = await bank.agreement()
    closed = await bank.channel.close_order(OrderRef("o-ghost", Operation.WITHHOLD, 10_000, "CNY"))
    assert (closed.status, closed.code, closed.safe_elsewhere) == (F, "ORDER_CLOSED", True)
    late = await bank.withhold("o-ghost", 10_000, agreement)
    assert (late.status, late.code) == (F, "ORDER_CLOSED")
    assert bank.sim.ledger.entries() == []
    assert (await bank.query("o-ghost")).code == "ORDER_CLOSED"

    await bank.withhold("o-real", 10_000, agreement)
    assert (await bank.channel.close_order(OrderRef("o-real", Operation.WITHHOLD, 10_000, "CNY"))).status is S


async def test_query_of_an_unknown_order_is_pending_not_found(bank: Bank) -> None:
    outcome = await bank.query("o-never")
    assert (outcome.status, outcome.code, outcome.not_found) == (P, "NOT_FOUND", True)


# --- signatures both ways ---------------------------------------------------------


async def _raw_post(bank: Bank, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session:
        async with session.post(bank.sim.base_url + path, data=body, headers=headers) as response:
            return response.status, json.loads(await response.read())


async def test_simulator_rejects_tampered_stale_and_replayed_requests(bank: Bank) -> None:
    agreement = await bank.agreement()
    request = wire.WithholdRequest("o-evil", 10_000, "CNY", agreement, CARD, "ICBC")
    body = wire.encode(request)
    settings = bank.sim.adapter_settings()
    headers = wire.sign_headers(settings["merchant_id"], settings["secret"], "POST", "/v1/withhold", body)

    status, reply = await _raw_post(bank, "/v1/withhold", body.replace(b"10000", b"99900"), headers)
    assert (status, reply["code"]) == (401, wire.RawCode.SIGNATURE_INVALID)
    forged = wire.sign_headers(settings["merchant_id"], "guess", "POST", "/v1/withhold", body)
    assert (await _raw_post(bank, "/v1/withhold", body, forged))[0] == 401
    other_merchant = wire.sign_headers("m-2", settings["secret"], "POST", "/v1/withhold", body)
    assert (await _raw_post(bank, "/v1/withhold", body, other_merchant))[0] == 401
    stale = wire.sign_headers(
        settings["merchant_id"], settings["secret"], "POST", "/v1/withhold", body, timestamp=int(time.time()) - 900
    )
    status, reply = await _raw_post(bank, "/v1/withhold", body, stale)
    assert (status, reply["code"]) == (401, wire.RawCode.REQUEST_EXPIRED)
    assert bank.sim.ledger.entries() == []

    status, reply = await _raw_post(bank, "/v1/withhold", body, headers)
    assert (status, reply["code"]) == (200, "0000")
    status, reply = await _raw_post(bank, "/v1/withhold", body, headers)  # same nonce again
    assert (status, reply["code"]) == (401, wire.RawCode.REQUEST_EXPIRED)
    assert bank.sim.ledger.debit_count("o-evil") == 1


async def test_adapter_distrusts_answers_it_cannot_verify() -> None:
    bank = await _bank(secret="not-the-bank-secret")
    try:
        outcome = await bank.withhold("o-wrong-key", 10_000, "A-none")
        # The bank refused (401) but we cannot verify that: never safe elsewhere, never definite.
        assert (outcome.status, outcome.code) == (P, "RESPONSE_SIGNATURE_INVALID")
        assert bank.sim.ledger.entries() == []
        with pytest.raises(ChannelUnavailable):
            await bank.channel.balance()
    finally:
        await _close(bank)


# --- callbacks ----------------------------------------------------------------------


async def test_callbacks_are_retried_until_acknowledged(bank: Bank) -> None:
    bank.receiver.fail_first = 2
    agreement = await bank.agreement()
    assert (await bank.withhold("o-cb", 10_005, agreement)).status is P
    await _settled(bank)
    [delivery] = bank.sim.callbacks.deliveries
    assert delivery.acked and delivery.attempts == 3
    assert delivery.statuses == [500, 500, 200]
    assert [(n.channel_order_no, n.outcome.status) for n in bank.receiver.notices] == [("o-cb", S)]


async def test_callbacks_that_do_not_verify_are_refused_and_retried_then_given_up() -> None:
    bank = await _bank()
    try:
        agreement = await bank.agreement()
        # The receiver's channel now holds another secret: every callback fails verification.
        bank.receiver.channel = build(ChannelSpec("sbx-1", "sandbox", {**bank.sim.adapter_settings(), "secret": "x"}))
        await bank.withhold("o-cb-bad", 10_005, agreement)
        await _settled(bank)
        [delivery] = bank.sim.callbacks.deliveries
        assert not delivery.acked and delivery.attempts == FAST_CALLBACKS.max_attempts
        assert bank.receiver.rejected == FAST_CALLBACKS.max_attempts and bank.receiver.notices == []
    finally:
        await _close(bank)


async def test_notify_final_sends_callbacks_for_immediate_results(bank: Bank) -> None:
    bank.sim.behaviour.notify_final = True
    agreement = await bank.agreement()
    await bank.withhold("o-now", 10_000, agreement)
    await bank.withhold("o-poor", 10_001, agreement)
    await bank.withhold("o-no-agreement", 10_000, "A-unknown")
    await _settled(bank)
    codes = sorted((n.channel_order_no, n.outcome.code) for n in bank.receiver.notices)
    assert codes == [("o-no-agreement", "AGREEMENT_INVALID"), ("o-now", "OK"), ("o-poor", "INSUFFICIENT_FUNDS")]


# --- agreements, refunds, admin -------------------------------------------------------


async def test_agreement_lifecycle(bank: Bank) -> None:
    started = await bank.channel.sign_agreement(
        SignRequest("sign-9", CARD, "张三", "110101199001011234", "13800138000", "ICBC")
    )
    status, sms = await bank.admin("GET", f"/_admin/sms/{started.sign_ref}")
    assert status == 200 and sms == {"sms_code": bank.sim.sms_code(started.sign_ref)}
    wrong = "000000" if bank.sim.sms_code(started.sign_ref) != "000000" else "111111"
    with pytest.raises(ChannelRejected) as info:
        await bank.channel.confirm_agreement(started.sign_ref, wrong)
    assert info.value.code == "SMS_CODE_INVALID" and info.value.payer_attributable
    confirmed = await bank.channel.confirm_agreement(started.sign_ref, bank.sim.sms_code(started.sign_ref))
    again = await bank.channel.confirm_agreement(started.sign_ref, bank.sim.sms_code(started.sign_ref))
    assert confirmed == again

    other_card = await bank.withhold("o-other-card", 10_000, confirmed.agreement_ref, account="6222000000009999")
    assert (other_card.status, other_card.code, other_card.payer_attributable) == (F, "AGREEMENT_INVALID", True)
    assert (await bank.withhold("o-before-revoke", 10_000, confirmed.agreement_ref)).status is S
    await bank.channel.revoke_agreement(confirmed.agreement_ref)
    revoked = await bank.withhold("o-after-revoke", 10_000, confirmed.agreement_ref)
    assert (revoked.code, revoked.payer_attributable, revoked.safe_elsewhere) == ("AGREEMENT_INVALID", True, False)

    with pytest.raises(ChannelRejected) as info:
        await bank.channel.confirm_agreement("S-unknown", "123456")
    assert info.value.code == "SIGN_REF_UNKNOWN"
    with pytest.raises(ChannelRejected):
        await bank.channel.revoke_agreement("A-unknown")


async def test_sms_codes_expire() -> None:
    bank = await _bank(sms_ttl_s=0.05)
    try:
        started = await bank.channel.sign_agreement(
            SignRequest("sign-x", CARD, "张三", "110101199001011234", "13800138000", "ICBC")
        )
        await asyncio.sleep(0.1)
        with pytest.raises(ChannelRejected) as info:
            await bank.channel.confirm_agreement(started.sign_ref, bank.sim.sms_code(started.sign_ref))
        assert info.value.code == "SMS_CODE_EXPIRED"
    finally:
        await _close(bank)


async def test_refunds_cannot_exceed_the_original(bank: Bank) -> None:
    agreement = await bank.agreement()
    original = await bank.withhold("o-refundable", 10_000, agreement)
    before = bank.sim.ledger.balance(CARD)

    def refund(order_no: str, amount: int, original_no: str = "o-refundable") -> RefundOrder:
        return RefundOrder(order_no, original_no, original.channel_txn_id, amount, 10_000, "CNY")

    assert (await bank.channel.refund(refund("r-1", 6_000))).status is S
    over = await bank.channel.refund(refund("r-2", 4_010))
    assert (over.status, over.code, over.safe_elsewhere) == (F, "REFUND_EXCEEDS_ORIGINAL", False)
    assert (await bank.channel.refund(refund("r-3", 4_000))).status is S
    assert bank.sim.ledger.balance(CARD) == before + 10_000
    missing = await bank.channel.refund(refund("r-4", 100, original_no="o-nowhere"))
    assert (missing.status, missing.code) == (F, "ORIGINAL_NOT_REFUNDABLE")
    assert bank.sim.ledger.debits_by_order() == {"o-refundable": 1, "r-1": 1, "r-3": 1}


async def test_admin_endpoints(bank: Bank) -> None:
    agreement = await bank.agreement()
    await bank.withhold("o-admin", 10_000, agreement)
    status, dump = await bank.admin("GET", "/_admin/ledger")
    assert status == 200 and isinstance(dump, dict)
    assert CARD not in json.dumps(dump)
    assert dump["debits_by_order"] == {"o-admin": 1}
    status, error = await bank.admin("POST", "/_admin/behaviour", {"pending_ratio": 7})
    assert status == 400 and "pending_ratio" in str(error)
    assert (await bank.admin("GET", "/_admin/sms/S-nope"))[0] == 404
    status, behaviour = await bank.admin("GET", "/_admin/behaviour")
    assert status == 200 and behaviour == bank.sim.behaviour.to_settings()


# --- command line -----------------------------------------------------------------------


async def test_cli_serves_until_sigterm() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "channels.sandbox.simulator",
        "--port",
        str(port),
        "--merchant-id",
        "cli-m",
        "--secret",
        "cli-secret",
        "--behaviour-json",
        '{"seed": 3}',
        stdout=asyncio.subprocess.PIPE,
        cwd=os.getcwd(),
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 15)
        assert f"127.0.0.1:{port}" in line.decode()
        spec = ChannelSpec(
            "cli", "sandbox", {"base_url": f"http://127.0.0.1:{port}", "merchant_id": "cli-m", "secret": "cli-secret"}
        )
        async with build(spec) as channel:
            assert (await channel.balance()).currency == "CNY"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_cli_rejects_bad_behaviour() -> None:
    from channels.sandbox.simulator import run

    assert await run(["--behaviour-json", '{"timeout_ratio": 5}']) == 2
    assert await run(["--behaviour-json", "{nope"]) == 2
