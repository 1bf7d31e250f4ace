"""Reconciliation of payer-initiated collections (主动还款) that went through the running gateway.

A borrower pays a cashier; the gateway learns the result from the notification or, when the
notification is lost, from its query at the expiry. The next morning's statement of each
channel must match those collections exactly: amount and fee. The sandbox bank states the fee
it charged in every answer (its protocol has the field), so its fee is the channel's word even
when the configured fee schedule says otherwise; Alipay and WeChat Pay answers carry no fee,
so there the schedule is what the statement is checked against.
"""

from __future__ import annotations

from typing import Any

from channels.simkit import CallbackPolicy
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2 as pb
from paygate.v1 import recon_pb2, recon_pb2_grpc
from tests.integration.test_collections_acceptance import ADAPTERS, cashier_of, create, gateway, settled
from tests.support.harness import Harness

# the schedule routing expects: 0.6 % everywhere; the sandbox bank actually charges 0.35 %
SCHEDULE_PPM = 6_000
CHARGED_BPS = {"ali": 60, "wx": 60, "sbx": 35}


async def _collect(h: Harness, channel: str, amount: int) -> pb.Flow:
    flow = await h.stub.CreateCollection(create(channel, amount=amount, expires_in_s=2), metadata=h.md())
    h.sims[channel].pay_cashier(cashier_of(flow))
    done = await settled(h, flow)
    assert done.status == pb.SUCCEEDED, (channel, done.attempts)
    return done


async def _run(h: Harness, channel: str) -> Any:
    sim = h.sims[channel]
    day = sim.ledger.booking_day(sim.ledger.now())
    recon = recon_pb2_grpc.ReconciliationStub(h.channel)
    return await recon.Run(
        recon_pb2.RunReconRequest(channel=channel, business_day=day.isoformat(), reason="collections"),
        metadata=h.op_md,
    )


async def test_paid_collections_match_the_statement_amount_and_fee(db_config: DatabaseConfig) -> None:
    routing = {name: {"fee": {"rate_ppm": SCHEDULE_PPM}} for name in ADAPTERS}
    async with gateway(db_config, channel_routing=routing) as h:
        for name, sim in h.sims.items():
            sim.ledger.fee_bps = CHARGED_BPS[name]
        for channel in ADAPTERS:
            await _collect(h, channel, 12_345)  # told by the notification
            sim = h.sims[channel]
            sim.callbacks.policy = CallbackPolicy(max_attempts=0)
            await _collect(h, channel, 23_456)  # found by the query at the expiry
            sim.callbacks.policy = CallbackPolicy()
            # the channel charged what its ledger says
            fees = [e.fee for e in sim.ledger.entries() if e.fee]
            expected = [(a * CHARGED_BPS[channel] + 5_000) // 10_000 for a in (12_345, 23_456)]
            assert sorted(fees) == sorted(expected), channel
        for channel in ADAPTERS:
            run = await _run(h, channel)
            assert (run.status, run.lines, run.matched, run.discrepancies) == ("SUCCEEDED", 2, 2, 0), (channel, run)
            assert run.outcome == "consistent"
        # the sandbox attempts carry the bank's own fee, not the schedule's
        rows = await h.gateway.db.fetchall(
            "SELECT a.amount, a.fee FROM attempts a JOIN flows f ON f.id = a.flow_id"
            " WHERE f.kind = 'COLLECT' AND a.channel = 'sbx' ORDER BY a.amount"
        )
        assert [(r["amount"], r["fee"]) for r in rows] == [(12_345, 43), (23_456, 82)]
