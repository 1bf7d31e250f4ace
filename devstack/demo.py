"""``paygate demo``: the whole system, for real, in about a minute.

Starts (as separate processes, on 127.0.0.1 only): a Kafka-protocol broker
(tansu), three sandbox banks with different behaviour, and the gateway behind
mutual TLS (a throw-away CA made for the run, devstack/certs.py: the lending
system is known by its certificate's SAN and shows its token as a second
factor; a client without a certificate is refused at the handshake); then
drives a sample workload through the gRPC API as a lending system would:
sign and confirm agreements, withholds (successes, payer declines, a busy
bank that fails over, pending results settled by callback, a timeout after
the bank debited), a duplicate request, a refund, payouts, borrowers who
repay on their own (主动还款) in a bank's cashier (QR, H5, in-app), the sandbox
bank playing the borrower over its admin routes, and a repayment
plan whose first instalment fails for lack of funds at the 12:00 time point
and is collected at 18:00 (the demo starts the two time points' runs itself,
one after the other, as an operator would; the banks' magic amounts are
switched off in between: the borrower's salary arrived), then a joint loan's
repayment split 30 : 70 between two funders to the fen, partly refunded, and
the day's settlement of both funders with its statement. It waits for every
pending result, reads the banks' ledgers to count double debits, tails the
Kafka topic with the reference consumer, prints a summary and a per-channel
success table from the metrics endpoint, and shuts everything down (run from
a terminal, it first waits for Enter, so the console can be looked at).

The last line is machine-readable::

    demo: flows=<n> succeeded=<n> failed=<n> processing=<n> replayed=<n> double_debits=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

from devstack.agreements import bind_card
from devstack.cards import luhn_card
from devstack.certs import stack_pki
from devstack.config import GatewayPorts, gateway_config
from devstack.http import http_get, http_json
from devstack.kafka import KafkaBroker, gateway_kafka
from devstack.processes import ProcessSet
from devstack.stack import GatewayProcess, SandboxProcess
from gateway.businessday import BusinessCalendar
from gateway.domain import minor_to_text
from gateway.security.passwords import hash_password
from paygate.v1 import gateway_pb2 as pb
from paygate.v1 import gateway_pb2_grpc, plans_pb2_grpc, recon_pb2, recon_pb2_grpc, splits_pb2_grpc
from paygate.v1 import plans_pb2 as plans_pb
from paygate.v1 import splits_pb2 as splits_pb

CALLER = "loan-servicing"
TOKEN = "demo-loan-servicing-token-0001"
OPERATOR = "oncall"
OPERATOR_TOKEN = "demo-operator-token-000000001"
# the operations console: a person signs in with a password (the demo prints it)
CONSOLE_OPERATOR = "demo"
CONSOLE_PASSWORD = "demo-console-password"
CONSOLE_OPERATOR_TOKEN = "demo-console-operator-token-01"
SANS = {CALLER: "spiffe://lender.example/loan-servicing", OPERATOR: "spiffe://lender.example/operators/oncall"}

BANKS: dict[str, dict[str, Any]] = {
    # fast and reliable, but the most expensive
    "icbc-direct": {"behaviour": {"p50_ms": 15, "p99_ms": 60}, "fee": {"fixed": 20, "rate_ppm": 1500}},
    # cheap; sometimes busy (a definite, safe-to-retry-elsewhere decline) and sometimes slow to confirm
    "union-agg": {
        "behaviour": {
            "p50_ms": 30,
            "p99_ms": 120,
            "declines": {"channel_busy": 0.25},
            "pending_ratio": 0.1,
            "settle_after_ms": [300, 900],
        },
        "fee": {"fixed": 5, "rate_ppm": 800},
    },
    # middle cost, slower
    "ccb-gateway": {"behaviour": {"p50_ms": 80, "p99_ms": 250}, "fee": {"fixed": 10, "rate_ppm": 1000}},
}


class Demo:
    def __init__(self, workdir: Path, database: str, kafka: bool) -> None:
        self.workdir = workdir
        self.database = database
        self.kafka = kafka
        self.procs = ProcessSet(workdir / "processes.log")
        self.broker = KafkaBroker(procs=self.procs)
        self.banks = {name: SandboxProcess(name, spec["behaviour"]) for name, spec in BANKS.items()}
        self.gateway = GatewayProcess(self.procs, workdir / "paygate.toml", GatewayPorts.free(console=True))
        self.topic = "paygate.flow-results"
        self.plan_topic = "paygate.plan-outcomes"
        self.pki = stack_pki(workdir / "tls", SANS, name="paygate demo CA")

    def start_services(self) -> None:
        if self.kafka:
            self.broker.start()
            print(f"  kafka-protocol broker (tansu)   {self.broker.bootstrap}")
        for name, bank in self.banks.items():
            bank.start(self.procs)
            print(f"  sandbox bank {name:<16} 127.0.0.1:{bank.port}  behaviour={json.dumps(bank.behaviour)}")
        self.gateway.write_config(self.config())
        self.gateway.migrate()
        self.gateway.start()
        ports = self.gateway.ports
        cert, key = self.pki.client_files(CALLER)
        print(f"  gateway gRPC                   127.0.0.1:{ports.grpc}  (mutual TLS; reflection on:")
        print(f"    grpcurl -cacert {self.pki.ca_file} -cert {cert} -key {key} 127.0.0.1:{ports.grpc} list)")
        print(f"  gateway callbacks (HTTP)       127.0.0.1:{ports.http}/callbacks/<channel>")
        print(f"  gateway metrics                http://127.0.0.1:{ports.metrics}/metrics")
        print(f"  operations console (运营后台)    {self.console_url}")
        print(f"    sign in: operator {CONSOLE_OPERATOR!r}, password {CONSOLE_PASSWORD!r} (role approver)")

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.console_port}/"

    def config(self) -> dict[str, Any]:
        return gateway_config(
            self.gateway.ports,
            server={"default_wait_ms": 3000, "grace_s": 5, "tls": self.pki.server_tls()},
            database={"database": self.database},
            security={"account_hash_key": "demo-account-hash-key-change-me"},
            callers={CALLER: {"token": TOKEN, "san": SANS[CALLER], "auth": "cert+token"}},
            operators={
                OPERATOR: {"token": OPERATOR_TOKEN, "san": SANS[OPERATOR], "role": "approver"},
                CONSOLE_OPERATOR: {
                    "token": CONSOLE_OPERATOR_TOKEN,
                    "role": "approver",
                    "password_hash": hash_password(CONSOLE_PASSWORD),
                },
            },
            console={"enabled": True, "port": self.gateway.console_port, "secret_key": secrets.token_urlsafe(32)},
            poller={"interval_s": 0.2, "first_delay_s": 0.5, "schedule": [[0.5, 20], [2, 30]]},
            logging={"format": "json"},
            routing={"exploration": 1.0},
            kafka=gateway_kafka(self.broker.bootstrap, self.topic, event_topics={"INSTALMENT_OUTCOME": self.plan_topic})
            if self.kafka
            else None,
            plans={
                "scheduler": False,  # the demo moves from one time point to the next itself
                "tick_s": 0.2,
                "resolve_interval_s": 0.5,
                # no quiet window here: the demo may run at any hour
                "policies": {"default": {"time_points": ["12:00", "18:00"], "retry_days": 3}},
                "products": {"cash-loan": "default"},
            },
            funders={
                "xd": {
                    "name": "某某小额贷款有限公司 (small-loan company)",
                    "payout_account": "6222020000000301",
                    "account_name": "XD Small Loans",
                    "settle_from": "icbc-direct",
                },
                "bank": {
                    "name": "某某银行 (partner bank)",
                    "payout_account": "6222020000000702",
                    "account_name": "Partner Bank",
                    "settle_from": "icbc-direct",
                },
            },
            settlement={"enabled": False, "lookback_days": 0},  # the demo settles its day itself (section 11)
            channels=[
                bank.channel(timeout_s=1.5, routing={"fee": BANKS[name]["fee"]}) for name, bank in self.banks.items()
            ],
        )

    # --- the workload -----------------------------------------------------------------

    async def transport_security(self) -> None:
        """What mutual TLS refuses: no certificate (the handshake), the certificate without its token."""
        print("\n== 0. mutual TLS: the lending system is known by its certificate (SAN), its token is a second factor")
        attempts = (
            ("no client certificate", None, (("authorization", f"Bearer {TOKEN}"),)),
            (f"{CALLER}'s certificate, no token", CALLER, ()),
            # a second authorization header (a proxy's, a smuggled one) is never resolved by which came first
            (
                "its token and a second header",
                CALLER,
                (("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer not-a-token")),
            ),
        )
        for what, client, metadata in attempts:
            async with grpc.aio.secure_channel(self.gateway.address, self.pki.grpc_credentials(client)) as channel:
                try:
                    await gateway_pb2_grpc.PaymentGatewayStub(channel).ListAgreements(
                        pb.ListAgreementsRequest(), metadata=metadata, timeout=5
                    )
                    print(f"  {what:<40} -> accepted (unexpected)")
                except grpc.aio.AioRpcError as exc:
                    why = "the TLS handshake refused it" if exc.code() == grpc.StatusCode.UNAVAILABLE else exc.details()
                    print(f"  {what:<40} -> {exc.code().name}: {(why or '')[:70]}")

    async def workload(self) -> dict[str, Any]:
        md = (("authorization", f"Bearer {TOKEN}"),)
        rng = random.Random(20261122)
        await self.transport_security()
        async with grpc.aio.secure_channel(self.gateway.address, self.pki.grpc_credentials(CALLER)) as channel:
            stub = gateway_pb2_grpc.PaymentGatewayStub(channel)
            borrowers = [luhn_card(rng) for _ in range(6)]
            print("\n== 1. borrowers sign withholding agreements (签约绑卡), confirmed with the SMS code")
            for i, card in enumerate(borrowers):
                for bank in list(BANKS)[: 2 + i % 2]:
                    done = await bind_card(
                        stub,
                        md,
                        request_id=f"sign-{i}-{bank}",
                        channel=bank,
                        card=card,
                        sms_code=self.banks[bank].last_sms_code,
                    )
                    print(f"  {done.account_masked} with {bank:<12} -> {pb.AgreementStatus.Name(done.status)}")
            flows: dict[str, pb.Flow] = {}
            replayed = 0

            async def withhold(rid: str, card: str, amount: int) -> pb.Flow:
                flow = await stub.Withhold(
                    pb.WithholdRequest(
                        request_id=rid,
                        amount=pb.Money(amount=amount, currency="CNY"),
                        account_no=card,
                        bank_code="ICBC",
                        description="loan repayment",
                    ),
                    metadata=md,
                )
                flows[rid] = flow
                return flow

            print("\n== 2. repayments withheld (代扣): 24 ordinary ones, routed by success rate, float and cost")
            amounts = [rng.randrange(100, 5000) * 100 + rng.choice([10, 20, 50, 88]) for _ in range(24)]
            results = await asyncio.gather(
                *[withhold(f"repay-{i}", borrowers[i % len(borrowers)], a) for i, a in enumerate(amounts)]
            )
            for flow in results[:8]:
                self.print_flow(flow)
            print(f"  ... {len(results)} in all; failovers: {sum(len(f.attempts) > 1 for f in results)}")
            print("\n== 3. declines are FAILED flows, not errors (magic amounts: ..01 funds, ..02 frozen)")
            self.print_flow(await withhold("repay-nsf", borrowers[0], 12301))
            self.print_flow(await withhold("repay-frozen", borrowers[1], 8802))
            print(
                "\n== 4. unconfirmed results: a bank says 'processing' (..05) and one times out after debiting (..07)"
            )
            self.print_flow(await withhold("repay-pending", borrowers[2], 45605))
            self.print_flow(await withhold("repay-timeout", borrowers[3], 33307))
            print("\n== 5. the lending system retries the same request_id: same flow back, nothing charged again")
            again = await stub.Withhold(
                pb.WithholdRequest(
                    request_id="repay-0",
                    amount=pb.Money(amount=amounts[0], currency="CNY"),
                    account_no=borrowers[0],
                    bank_code="ICBC",
                    description="loan repayment",
                ),
                metadata=md,
            )
            replayed += int(again.replayed)
            print(f"  repay-0 again -> flow {again.flow_no} replayed={again.replayed}")
            try:
                await stub.Withhold(
                    pb.WithholdRequest(
                        request_id="repay-0",
                        amount=pb.Money(amount=amounts[0] + 1, currency="CNY"),
                        account_no=borrowers[0],
                        bank_code="ICBC",
                    ),
                    metadata=md,
                )
            except grpc.aio.AioRpcError as exc:
                print(f"  repay-0 with another amount -> {exc.code().name}: {(exc.details() or '')[:90]}")
            print("\n== 6. a partial refund of a succeeded repayment, then one that would exceed it")
            paid = next(f for f in results if f.status == pb.SUCCEEDED)
            refund = await stub.Refund(
                pb.RefundRequest(
                    request_id="refund-1",
                    original_flow_no=paid.flow_no,
                    amount=pb.Money(amount=paid.amount.amount // 2, currency="CNY"),
                    reason="overpaid",
                ),
                metadata=md,
            )
            flows["refund-1"] = refund
            self.print_flow(refund)
            try:
                await stub.Refund(
                    pb.RefundRequest(
                        request_id="refund-2",
                        original_flow_no=paid.flow_no,
                        amount=pb.Money(amount=paid.amount.amount, currency="CNY"),
                    ),
                    metadata=md,
                )
            except grpc.aio.AioRpcError as exc:
                print(f"  refund of the full amount again -> {exc.code().name}: {(exc.details() or '')[:90]}")
            print("\n== 7. loans disbursed (代付): payouts reserve the channel's float before sending")
            for i in range(6):
                flow = await stub.Payout(
                    pb.PayoutRequest(
                        request_id=f"disburse-{i}",
                        amount=pb.Money(amount=500_000 + i * 10_000, currency="CNY"),
                        account_no=f"62220202{i:08d}",
                        account_name="王小明",
                        bank_code="ICBC",
                    ),
                    metadata=md,
                )
                flows[f"disburse-{i}"] = flow
                if i < 3:
                    self.print_flow(flow)
            await self.collections(stub, md, flows)
            print("\n== 9. waiting for every unconfirmed result (callbacks and the poll queue)...")
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                pending = [rid for rid, f in flows.items() if f.status == pb.PROCESSING and not f.needs_review]
                if not pending:
                    break
                for rid in pending:
                    flows[rid] = await stub.GetFlow(pb.GetFlowRequest(request_id=rid), metadata=md)
                await asyncio.sleep(0.5)
            for rid in ("repay-pending", "repay-timeout", "self-repay-qr", "self-repay-in_app", "self-repay-h5"):
                self.print_flow(flows[rid])
            for flow in await self.plan_section(channel, md, borrowers[0]):
                flows[flow.request_id] = flow
            for flow in await self.splits_section(channel, md, borrowers[0]):
                flows[flow.request_id] = flow
            found, false = await self.recon_section()
            return {"flows": flows, "replayed": replayed, "recon_found": found, "recon_false": false}

    async def recon_section(self) -> tuple[int, int]:
        """Reconciliation of today's statement of one bank, with a debit the bank booked that paygate never sent,
        then of every other bank's (nothing injected: nothing may be found). Returns (found, found otherwise)."""
        bank = "icbc-direct"
        print(f"\n== 12. reconciliation (对账): {bank}'s statement of today against every attempt paygate sent it")
        day = BusinessCalendar.named().today(datetime.now(UTC))
        # the bank's statement lies once: a line for an order paygate never sent (the simulator's fault switch)
        http_json(
            f"{self.banks[bank].base_url}/_admin/statement/faults",
            {"extra": [{"day": day.isoformat(), "order_no": "DEMO-GHOST-1", "amount": 12_300}]},
            timeout=5,
        )
        print("  injected: the statement shows a debit of 123.00 CNY for order DEMO-GHOST-1, which paygate never sent")
        operator = grpc.aio.secure_channel(self.gateway.address, self.pki.grpc_credentials(OPERATOR))
        op_md = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)
        recon = recon_pb2_grpc.ReconciliationStub(operator)
        try:
            run = await recon.Run(
                recon_pb2.RunReconRequest(channel=bank, business_day=day.isoformat(), reason="demo: the morning check"),
                metadata=op_md,
            )
            print(
                f"  run #{run.id} {run.channel} {run.business_day}: {run.outcome}; lines {run.lines},"
                f" matched {run.matched}, discrepancies {run.discrepancies}, flows settled {run.resolved},"
                f" carried {run.carried}"
            )
            for kind in run.totals:
                print(
                    f"  {kind.kind:<9} statement {kind.statement_count} / {kind.statement_amount / 100:,.2f} CNY,"
                    f" paygate {kind.local_count} / {kind.local_amount / 100:,.2f} CNY"
                )
            listed = await recon.ListDiscrepancies(
                recon_pb2.ListReconDiscrepanciesRequest(run_id=run.id), metadata=op_md
            )
            for item in listed.items:
                flag = "critical" if item.critical else "finance"
                print(
                    f"  {getattr(item, 'class'):<16} {item.channel_order_no:<28} ours [{item.local_status or '-'}]"
                    f" statement [{item.line_status} {item.line_amount / 100:,.2f}] ({flag}; a RECON_DISCREPANCY event)"
                )
            found = sum(1 for item in listed.items if item.channel_order_no == "DEMO-GHOST-1")
            false = len(listed.items) - found
            for other in sorted(set(self.banks) - {bank}):  # the other banks' statements: nothing injected
                again = await recon.Run(
                    recon_pb2.RunReconRequest(channel=other, business_day=day.isoformat(), reason="demo"),
                    metadata=op_md,
                )
                false += again.discrepancies
                print(
                    f"  run #{again.id} {other} {again.business_day}: {again.outcome}; lines {again.lines},"
                    f" matched {again.matched}, discrepancies {again.discrepancies}, flows settled {again.resolved}"
                )
            return found, false
        finally:
            await operator.close(None)

    async def collections(
        self, stub: gateway_pb2_grpc.PaymentGatewayAsyncStub, md: Any, flows: dict[str, pb.Flow]
    ) -> None:
        """Borrowers repay on their own (主动还款): the gateway hands the app a cashier, the borrower pays there."""
        print("\n== 8. borrowers repay on their own (主动还款) in a bank's cashier; the bank plays the borrower")
        kinds = {"qr": pb.CASHIER_QR, "h5": pb.CASHIER_H5, "in_app": pb.CASHIER_IN_APP}
        opened: dict[str, pb.Flow] = {}
        for kind, value in kinds.items():
            request = pb.CreateCollectionRequest(
                request_id=f"self-repay-{kind}",
                amount=pb.Money(amount=36_800, currency="CNY"),
                cashier=value,
                expires_in_s=600,
                description="第3期主动还款 / instalment 3",
            )
            flow = await stub.CreateCollection(request, metadata=md)
            opened[kind] = flows[request.request_id] = flow
            payload = flow.cashier.qr_code or flow.cashier.url or flow.cashier.order_string
            print(f"  {request.request_id:<17} {flow.channel:<12} cashier {kind:<6} -> {payload[:70]}")
        again = await stub.CreateCollection(
            pb.CreateCollectionRequest(
                request_id="self-repay-qr",
                amount=pb.Money(amount=36_800, currency="CNY"),
                cashier=pb.CASHIER_QR,
                expires_in_s=600,
                description="第3期主动还款 / instalment 3",
            ),
            metadata=md,
        )
        print(f"  the app asks again (same request_id) -> the same cashier: {again.cashier == opened['qr'].cashier}")
        for kind in ("qr", "in_app"):
            flow = opened[kind]
            cashier = {"kind": kind, **{k: v for k, v in _cashier_fields(flow.cashier).items() if v}}
            paid = self.banks[flow.channel].borrower("pay", {"cashier": cashier})
            print(f"  the borrower pays the {kind} cashier at {flow.channel}: {paid}")
        h5 = opened["h5"]
        self.banks[h5.channel].borrower("abandon", {"order_no": h5.attempts[-1].channel_order_no})
        closed = await stub.CloseCollection(pb.CloseCollectionRequest(flow_no=h5.flow_no), metadata=md)
        flows["self-repay-h5"] = closed
        print("  the h5 cashier is left unpaid; the lending app closes it (CloseCollection):")
        self.print_flow(closed)

    async def plan_section(self, channel: grpc.aio.Channel, md: Any, card: str) -> list[pb.Flow]:
        """A repayment plan: its first instalment fails for lack of funds at 12:00 and is collected at 18:00."""
        print("\n== 10. a repayment plan (代扣计划): withheld at the product's time points, retried at the next one")
        plans = plans_pb2_grpc.WithholdingPlansStub(channel)
        # the operator's own connection, with the operator's certificate (mutual TLS)
        operator = grpc.aio.secure_channel(self.gateway.address, self.pki.grpc_credentials(OPERATOR))
        admin = plans_pb2_grpc.PlanAdminStub(operator)
        op_md = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)
        day = BusinessCalendar.named().today(datetime.now(UTC)) - timedelta(days=1)  # yesterday, Shanghai
        months = [(day + timedelta(days=30 * k)).isoformat() for k in range(3)]
        reply = await plans.SubmitPlans(
            plans_pb.SubmitPlansRequest(
                plans=[
                    plans_pb.PlanSpec(
                        plan_id="loan-2026-0001",
                        product="cash-loan",
                        account_no=card,
                        bank_code="ICBC",
                        description="loan 2026-0001 repayment",
                        instalments=[
                            # ..01: the sandbox banks answer "insufficient funds" while their magic amounts are on
                            plans_pb.InstalmentSpec(
                                instalment_id=f"loan-2026-0001-{k + 1}",
                                due_date=due,
                                amount=pb.Money(amount=120_001 if k == 0 else 120_000, currency="CNY"),
                            )
                            for k, due in enumerate(months)
                        ],
                    )
                ]
            ),
            metadata=md,
        )
        print(f"  plan loan-2026-0001: {reply.instalments_accepted} instalments, the first due {months[0]}")
        for time_point, note in (("12:00", "the borrower's account is empty"), ("18:00", "salary arrived")):
            if time_point == "18:00":
                for bank in self.banks.values():  # the borrower's salary arrives between the two time points
                    bank.set_behaviour({"magic": False})
            key = plans_pb.RunRequest(
                policy="default", business_day=day.isoformat(), time_point=time_point, reason="demo"
            )
            await admin.StartRun(key, metadata=op_md)
            deadline = time.monotonic() + 30
            run = await admin.GetRun(key, metadata=op_md)
            while (run.remaining or run.in_flight) and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                run = await admin.GetRun(key, metadata=op_md)
            plan = await plans.GetPlan(plans_pb.GetPlanRequest(plan_id="loan-2026-0001"), metadata=md)
            first = plan.instalments[0]
            status = plans_pb.InstalmentStatus.Name(first.status).removeprefix("INSTALMENT_")
            retry = ""
            if first.status == plans_pb.INSTALMENT_SCHEDULED:
                when = first.next_attempt_at.ToDatetime().replace(tzinfo=UTC).astimezone(BusinessCalendar.named().tz)
                retry = f", retried at {when:%Y-%m-%d %H:%M}"
            failure = f" ({first.last_failure_code})" if first.last_failure_code else ""
            print(f"  {day} {time_point} [{note}]: attempted {run.attempted}, {status}{failure}{retry}")
        plan = await plans.GetPlan(
            plans_pb.GetPlanRequest(plan_id="loan-2026-0001", include_attempts=True), metadata=md
        )
        await operator.close(None)
        stub = gateway_pb2_grpc.PaymentGatewayStub(channel)
        flows = []
        for attempt in plan.instalments[0].attempt_history:
            flows.append(await stub.GetFlow(pb.GetFlowRequest(request_id=attempt.request_id), metadata=md))
            self.print_flow(flows[-1])
        return flows

    async def splits_section(self, channel: grpc.aio.Channel, md: Any, card: str) -> list[pb.Flow]:
        """A joint loan (联合贷): one repayment split 30 : 70 to the fen, a partial refund, the day's settlement."""
        print("\n== 11. a joint loan (联合贷): the repayment split 30 : 70 between its funders, to the fen")
        stub = gateway_pb2_grpc.PaymentGatewayStub(channel)

        async def final(flow: pb.Flow) -> pb.Flow:
            deadline = time.monotonic() + 20
            while flow.status == pb.PROCESSING and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                flow = await stub.GetFlow(pb.GetFlowRequest(flow_no=flow.flow_no), metadata=md)
            return flow

        shares = [pb.FunderShare(funder_id="xd", ppm=300_000), pb.FunderShare(funder_id="bank", ppm=700_000)]
        repay = await final(
            await stub.Withhold(
                pb.WithholdRequest(
                    request_id="joint-repay-1",
                    amount=pb.Money(amount=10_001, currency="CNY"),  # 100.01 yuan: 30 % of it is 30.003
                    account_no=card,
                    bank_code="ICBC",
                    description="joint loan 2026-0002 repayment",
                    shares=shares,
                ),
                metadata=md,
            )
        )
        self.print_flow(repay)
        for part in repay.split.parts:
            print(f"    funder {part.funder_id:<5} {minor_to_text(part.amount, 'CNY'):>8} CNY")
        total = minor_to_text(sum(p.amount for p in repay.split.parts), "CNY")
        print(f"    the parts sum to {total}: the odd fen goes by largest remainder, never lost or doubled")
        refund = await final(
            await stub.Refund(
                pb.RefundRequest(
                    request_id="joint-refund-1",
                    original_flow_no=repay.flow_no,
                    amount=pb.Money(amount=5_000, currency="CNY"),
                    reason="overpaid",
                ),
                metadata=md,
            )
        )
        self.print_flow(refund)
        print(
            "    refunded from each funder against what it still holds: "
            + ", ".join(f"{p.funder_id} {minor_to_text(p.amount, 'CNY')}" for p in refund.split.parts)
        )
        # A day is settled once it has ended. The demo does now what 01:00 tomorrow would: a second
        # replica of the gateway, whose clock reads tomorrow morning, settles today (the payouts go
        # through the normal payout path; a real scheduler simply waits for the day to end).
        today = BusinessCalendar.named().today(datetime.now(UTC))
        # That night the bank refuses payouts to xd's account (frozen): the sandbox is told to.
        bank = self.banks["icbc-direct"]
        bank.set_behaviour({"declines": {"account_frozen": 1.0}})
        try:
            rows = await self._settle_as_tomorrow(today, "xd")
        finally:
            bank.set_behaviour({"declines": {}})
        rows += await self._settle_as_tomorrow(today, "bank")
        print(f"  the day's settlement ({today}), run as at 01:00 the next morning:")
        for row in rows:
            print(
                f"    {row.funder_id:<5} withheld {minor_to_text(row.withheld, 'CNY'):>8}"
                f"  refunded {minor_to_text(row.refunded, 'CNY'):>7}  net {minor_to_text(row.net, 'CNY'):>8}"
                f"  paid {minor_to_text(row.paid, 'CNY'):>8} -> {row.status} (payout {row.payout_flow_no or '-'})"
            )
        operator = grpc.aio.secure_channel(self.gateway.address, self.pki.grpc_credentials(OPERATOR))
        op_md = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)
        try:
            settlements = splits_pb2_grpc.SplitSettlementStub(operator)
            # In the morning the funder has its account unfrozen; an operator re-sends the refused payout
            # under a new request id (paygate splits resend, or the console's Settlements screen; audited).
            resent = await settlements.ResendSettlementPayout(
                splits_pb.ResendSettlementPayoutRequest(
                    funder_id="xd", business_day=today.isoformat(), reason="account unfrozen by the funder"
                ),
                metadata=op_md,
            )
            status = splits_pb.SettlementStatus.Name(resent.status).removeprefix("SETTLEMENT_")
            print(
                f"  xd's refused payout re-sent by an operator (SplitSettlement/ResendSettlementPayout, audited):"
                f" {minor_to_text(resent.paid, 'CNY')} CNY -> {status}"
                f" (request {resent.payout_request_id}, payout {resent.payout_flow_no})"
            )
            statement = await settlements.GetStatement(
                splits_pb.StatementRequest(funder_id="bank", business_day=today.isoformat()), metadata=op_md
            )
        finally:
            await operator.close(None)
        print(f"  statement {statement.filename} (paygate splits statement, or SplitSettlement/GetStatement):")
        for line in statement.csv.lstrip("\ufeff").splitlines():
            if line:
                print(f"    {line}")
        return [repay, refund]

    async def _settle_as_tomorrow(self, day: Any, funder_id: str) -> list[Any]:
        """Settle ``day`` from this process, as a replica would at 01:00 the next morning (same database, banks)."""
        from gateway.app import Gateway
        from gateway.config import load

        tomorrow = BusinessCalendar.named().at(day + timedelta(days=1), datetime.strptime("01:00", "%H:%M").time())

        class Tomorrow:
            def now(self) -> datetime:
                return tomorrow

            async def sleep(self, seconds: float) -> None:
                await asyncio.sleep(seconds)

        replica = Gateway.build(load(str(self.workdir / "paygate.toml")), clock=Tomorrow())
        await replica.db.start()
        await replica.registry.start()
        try:
            return list(await replica.settlement.settle_through(day, funder_id))
        finally:
            await replica.registry.stop()
            await replica.db.stop()

    @staticmethod
    def print_flow(flow: pb.Flow) -> None:
        status = pb.FlowStatus.Name(flow.status)
        route = " -> ".join(f"{a.channel}({a.code or pb.AttemptStatus.Name(a.status)})" for a in flow.attempts)
        failure = f" failure={flow.failure.code}" if flow.status == pb.FAILED else ""
        amount = f"{flow.amount.amount / 100:,.2f} {flow.amount.currency}"
        print(
            f"  {flow.request_id:<17} {pb.FlowKind.Name(flow.kind):<8} {amount:>14} {flow.account_masked:<18} "
            f"{status:<10}{failure} via {route}"
        )

    def double_debits(self, flows: dict[str, pb.Flow]) -> tuple[int, int]:
        """(requests debited more than once, total debits) from the banks' own ledgers."""
        debits: Counter[str] = Counter()
        for bank in self.banks.values():
            ledger = bank.ledger()
            for order_no, n in ledger.get("debits_by_order", {}).items():
                debits[order_no] += int(n)
        doubles = 0
        for flow in flows.values():
            if flow.kind not in (pb.WITHHOLD, pb.COLLECT):
                continue
            total = sum(debits.get(a.channel_order_no, 0) for a in flow.attempts)
            doubles += int(total > 1)
        return doubles, sum(debits.values())

    async def kafka_results(self, expected: int) -> int:
        if not self.kafka:
            return 0
        from gateway.results import ResultConsumer

        seen = 0
        consumer = ResultConsumer(
            self.broker.bootstrap,
            [self.topic],
            group_id="demo-tail",
            from_beginning=True,
            idle_timeout_s=5.0,
        )
        try:
            async with asyncio.timeout(20):
                async for _event in consumer:
                    seen += 1
                    if seen >= expected:
                        break
        except TimeoutError:
            pass
        finally:
            await consumer.stop()
        return seen


def _cashier_fields(cashier: pb.Cashier) -> dict[str, Any]:
    return {
        "qr_code": cashier.qr_code,
        "url": cashier.url,
        "order_string": cashier.order_string,
        "sdk_params": dict(cashier.sdk_params),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paygate demo")
    parser.add_argument("--database", default="paygate_demo")
    parser.add_argument("--no-kafka", action="store_true")
    parser.add_argument(
        "--no-wait", action="store_true", help="stop at once at the end (by default a terminal keeps the console up)"
    )
    args = parser.parse_args(argv or [])
    workdir = Path(tempfile.mkdtemp(prefix="paygate-demo-"))
    demo = Demo(workdir, args.database, kafka=not args.no_kafka)
    subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", f"DROP DATABASE IF EXISTS `{args.database}`"], check=False)
    print("paygate demo: starting the real services (logs in", workdir / "processes.log", ")")
    try:
        demo.start_services()
        outcome = asyncio.run(demo.workload())
        flows: dict[str, pb.Flow] = outcome["flows"]
        doubles, debit_total = demo.double_debits(flows)
        statuses = Counter(pb.FlowStatus.Name(f.status) for f in flows.values())
        terminal = statuses["SUCCEEDED"] + statuses["FAILED"]
        events = asyncio.run(demo.kafka_results(terminal))
        print("\n== summary")
        print(
            f"  flows: {len(flows)}  succeeded: {statuses['SUCCEEDED']}  failed: {statuses['FAILED']}  "
            f"processing: {statuses['PROCESSING']}"
        )
        print(f"  bank ledgers: {debit_total} debits, requests debited more than once: {doubles}")
        if demo.kafka:
            print(
                f"  result events read from Kafka topic {demo.topic} (deduplicated): "
                f"{events} of {terminal} terminal flows"
            )
        try:
            from gateway.obs.dashboard import success_table

            metrics_url = f"http://127.0.0.1:{demo.gateway.metrics_port}/metrics"
            text = http_get(metrics_url).decode()
            print(
                f"\n== channel success rates (from {metrics_url}; "
                "Prometheus rules and the Grafana dashboard are in deploy/)"
            )
            print(success_table(text))
        except Exception as exc:  # the table is a convenience; never fail the demo on it
            print(f"  (metrics table unavailable: {exc})")
        print(f"\n== the operations console: {demo.console_url}")
        print(
            f"  sign in as {CONSOLE_OPERATOR!r} with password {CONSOLE_PASSWORD!r}: overview, flows, timelines, review"
        )
        print(f"  the withholding plans and today's time points: {demo.console_url}plans")
        print(f"  the joint-loan funders' settlements and statements: {demo.console_url}settlements")
        print(f"  the reconciliation runs and their discrepancies: {demo.console_url}recon")
        if not args.no_wait and sys.stdin.isatty():
            input("  the console stays up while you look; press Enter to stop everything ")
    finally:
        demo.procs.stop_all()
    print(
        f"demo: flows={len(flows)} succeeded={statuses['SUCCEEDED']} failed={statuses['FAILED']} "
        f"processing={statuses['PROCESSING']} replayed={outcome['replayed']} double_debits={doubles}"
        f" recon_found={outcome['recon_found']} recon_false={outcome['recon_false']}"
    )
    honest_books = outcome["recon_found"] == 1 and outcome["recon_false"] == 0
    return 0 if doubles == 0 and honest_books else 1


if __name__ == "__main__":
    raise SystemExit(main())
