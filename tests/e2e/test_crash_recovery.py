"""SIGKILL the gateway with attempts in flight, restart it: nothing unresolved, nothing debited twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from channels.sandbox.simulator import SandboxSimulator
from channels.simkit import Behaviour, Ledger
from devstack.cards import luhn_card
from gateway.store.db import Database, DatabaseConfig, migrate
from paygate.v1 import gateway_pb2 as pb
from paygate.v1 import gateway_pb2_grpc
from tests.support.harness import CALLER_TOKENS
from tests.support.processes import GatewayProcess

MD = (("authorization", f"Bearer {CALLER_TOKENS['loans']}"),)


async def bind(
    stub: gateway_pb2_grpc.PaymentGatewayStub, sims: dict[str, SandboxSimulator], db: Database, card: str
) -> None:
    for name, sim in sims.items():
        signed = await stub.SignAgreement(
            pb.SignAgreementRequest(
                request_id=f"s-{name}-{card}",
                channel=name,
                account_no=card,
                holder_name="张三",
                id_no="11010519491231002X",
                phone="13800138000",
                bank_code="ICBC",
            ),
            metadata=MD,
        )
        row = await db.fetchone("SELECT sign_ref FROM agreements WHERE agreement_no=%s", (signed.agreement_no,))
        await stub.ConfirmAgreement(
            pb.ConfirmAgreementRequest(agreement_no=signed.agreement_no, sms_code=sim.sms_code(row["sign_ref"])),
            metadata=MD,
        )


async def test_sigkill_with_attempts_in_flight(db_config: DatabaseConfig, tmp_path: Path) -> None:
    await migrate(db_config)
    sims = {
        "bank-a": SandboxSimulator(
            Behaviour(p50_ms=300, p99_ms=900, pending_ratio=0.2, settle_after_ms=(500, 1500)),
            name="bank-a",
            secret="bank-a-secret",
            ledger=Ledger(txn_prefix="A"),
        ),
        "bank-b": SandboxSimulator(
            Behaviour(p50_ms=200, p99_ms=700, timeout_ratio=0.1, timeout_hold_s=3.0),
            name="bank-b",
            secret="bank-b-secret",
            ledger=Ledger(txn_prefix="B"),
        ),
    }
    for sim in sims.values():
        await sim.start()
    channels = [
        {"id": name, "adapter": "sandbox", "settings": {**sim.adapter_settings(), "timeout_s": 2.0}}
        for name, sim in sims.items()
    ]
    gw = GatewayProcess(
        tmp_path,
        db_config,
        channels,
        server={"default_wait_ms": 50},
        poller={
            "interval_s": 0.1,
            "first_delay_s": 0.3,
            "schedule": [[0.3, 60], [1, 60]],
            "not_found_close_after_s": 2,
        },
    )
    db = Database(db_config)
    await db.start()
    try:
        await gw.start_async()
        cards = [luhn_card() for _ in range(4)]
        async with grpc.aio.insecure_channel(gw.address) as channel:
            stub = gateway_pb2_grpc.PaymentGatewayStub(channel)
            for card in cards:
                await bind(stub, sims, db, card)
            requests = [
                pb.WithholdRequest(
                    request_id=f"k-{i}",
                    amount=pb.Money(amount=1000 + 100 * i, currency="CNY"),
                    account_no=cards[i % 4],
                    bank_code="ICBC",
                    wait_ms=20,
                )
                for i in range(40)
            ]
            sent = asyncio.gather(*[stub.Withhold(r, metadata=MD) for r in requests], return_exceptions=True)
            await asyncio.sleep(0.25)
            gw.kill()  # crash: some calls recorded but not sent, some sent and unanswered
            await sent
        in_flight = await db.fetchone("SELECT COUNT(*) AS n FROM attempts WHERE status IN ('SENDING','PENDING')")
        recorded = await db.fetchone("SELECT COUNT(*) AS n FROM flows")
        assert recorded["n"] > 0
        await gw.start_async()
        async with grpc.aio.insecure_channel(gw.address) as channel:
            stub = gateway_pb2_grpc.PaymentGatewayStub(channel)
            # clients retry with the same request_id after the errors the crash caused
            for r in requests:
                for _ in range(50):
                    try:
                        await stub.Withhold(r, metadata=MD)
                        break
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.1)
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                open_rows = await db.fetchall(
                    "SELECT f.request_id FROM flows f WHERE f.status='PROCESSING' AND f.needs_review=0"
                )
                if not open_rows or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.3)
        assert not open_rows, f"flows left unresolved after restart: {open_rows}"
        attempts = await db.fetchall(
            "SELECT f.request_id, f.status AS flow_status, a.channel, a.channel_order_no, a.status"
            " FROM attempts a JOIN flows f ON f.id = a.flow_id"
        )
        assert not [a for a in attempts if a["status"] in ("SENDING", "PENDING")]
        debits: dict[str, int] = {}
        for sim in sims.values():
            for order, n in sim.ledger.debits_by_order().items():
                debits[order] = debits.get(order, 0) + n
        per_request: dict[str, int] = {}
        for a in attempts:
            per_request[a["request_id"]] = per_request.get(a["request_id"], 0) + debits.get(a["channel_order_no"], 0)
        flows = await db.fetchall("SELECT request_id, status FROM flows")
        assert len(flows) == 40
        for f in flows:
            n = per_request.get(f["request_id"], 0)
            assert n <= 1, f"{f['request_id']} debited {n} times"
            assert (n == 1) == (f["status"] == "SUCCEEDED"), (f, n)
        print(f"in flight at the crash: {in_flight['n']}; flows: {len(flows)}")
    finally:
        gw.kill()
        await db.stop()
        for sim in sims.values():
            await sim.stop()
