"""Adversarial probe: a split withhold too small for every funder to get a fen.

A 1-fen withhold at 50 : 50 gives the first funder 1 fen and the second a 0-fen part
(gateway/splits/allocation.py). The 0 part is a small order of 0: it is written, shown, refunded
nothing, settled nothing (its funder's day nets to 0, carried, never a payout of 0), and the parts
still sum to the whole at every step.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devstack.cards import luhn_card
from gateway.store.db import DatabaseConfig
from paygate.v1 import gateway_pb2, splits_pb2
from tests.fakes.clock import FakeClock
from tests.integration.test_splits_acceptance import (
    BANK_ACCOUNT,
    CAL,
    XD_ACCOUNT,
    parts,
    payouts_to,
    ppm,
    refund,
    settlements_stub,
    split_stack,
    tomorrow_morning,
    withhold,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(tzinfo=None))


async def test_a_zero_fen_part_is_written_refunded_nothing_and_settled_nothing(
    db_config: DatabaseConfig, clock: FakeClock
) -> None:
    async with split_stack(db_config, clock, lookback_days=0) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a"])
        tiny = await h.stub.Withhold(withhold("tiny-1", card, 1, ppm(xd=500_000, bank=500_000)), metadata=h.md())
        assert tiny.status == gateway_pb2.SUCCEEDED
        assert parts(tiny) == [("xd", 1, 0), ("bank", 0, 0)]  # the tie goes to the funder listed first
        three = await h.stub.Withhold(
            withhold("tiny-2", card, 2, ppm(xd=333_334, bank=333_333, rpt=333_333)), metadata=h.md()
        )
        assert parts(three) == [("xd", 1, 0), ("bank", 1, 0), ("rpt", 0, 0)]
        stored = await h.gateway.db.fetchall("SELECT funder_id, amount, refunded FROM splits ORDER BY flow_id, seq")
        assert [(r["funder_id"], r["amount"], r["refunded"]) for r in stored] == [
            ("xd", 1, 0),
            ("bank", 0, 0),
            ("xd", 1, 0),
            ("bank", 1, 0),
            ("rpt", 0, 0),
        ]

        back = await h.stub.Refund(refund("tiny-1-r", tiny.flow_no, 1), metadata=h.md())
        assert back.status == gateway_pb2.SUCCEEDED
        assert [(p.funder_id, p.amount) for p in back.split.parts] == [("xd", 1), ("bank", 0)]
        again = await h.stub.GetFlow(gateway_pb2.GetFlowRequest(flow_no=tiny.flow_no), metadata=h.md())
        assert parts(again) == [("xd", 1, 1), ("bank", 0, 0)]

        today = CAL.today(clock.now().replace(tzinfo=UTC))
        clock.set(tomorrow_morning())
        run = splits_pb2.RunSettlementRequest(business_day=today.isoformat(), reason="daily settlement")
        settled = {s.funder_id: s for s in (await settlements_stub(h).RunSettlement(run, metadata=h.op_md)).settlements}
        assert (settled["xd"].net, settled["xd"].paid, settled["xd"].status) == (1, 1, splits_pb2.SETTLEMENT_PAID)
        assert (settled["bank"].net, settled["bank"].paid, settled["bank"].status) == (
            1,
            1,
            splits_pb2.SETTLEMENT_PAID,
        )
        assert (settled["rpt"].net, settled["rpt"].paid) == (0, 0)
        assert payouts_to(h, XD_ACCOUNT) == 1 and payouts_to(h, BANK_ACCOUNT) == 1
        assert h.sims["bank-a"].ledger.balance(XD_ACCOUNT) == 1 and h.sims["bank-a"].ledger.balance(BANK_ACCOUNT) == 1
