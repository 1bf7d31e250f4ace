"""``paygate demo``: the whole system, for real, in about a minute.

Starts (as separate processes, on 127.0.0.1 only): a Kafka-protocol broker
(tansu), three sandbox banks with different behaviour, and the gateway; then
drives a sample workload through the gRPC API as a lending system would:
sign and confirm agreements, withholds (successes, payer declines, a busy
bank that fails over, pending results settled by callback, a timeout after
the bank debited), a duplicate request, a refund, payouts. It waits for every
pending result, reads the banks' ledgers to count double debits, tails the
Kafka topic with the reference consumer, prints a summary and a per-channel
success table from the metrics endpoint, and shuts everything down.

The last line is machine-readable::

    demo: flows=<n> succeeded=<n> failed=<n> processing=<n> replayed=<n> double_debits=<n>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from paygate.v1 import gateway_pb2 as pb
from paygate.v1 import gateway_pb2_grpc

CALLER = "loan-servicing"
TOKEN = "demo-loan-servicing-token-0001"  # noqa: S105 - demo only
OPERATOR_TOKEN = "demo-operator-token-000000001"  # noqa: S105 - demo only

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def luhn_card(rng: random.Random, prefix: str = "622202") -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(16 - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.3):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}")


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - loopback only
        return json.loads(reply.read())


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Demo:
    def __init__(self, workdir: Path, database: str, kafka: bool) -> None:
        self.workdir = workdir
        self.database = database
        self.kafka = kafka
        self.procs: list[Proc] = []
        self.bank_ports: dict[str, int] = {}
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.metrics_port = free_port()
        self.broker_port = free_port()
        self.topic = "paygate.flow-results"
        self.log = (workdir / "processes.log").open("ab")

    def spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(Proc(name, proc))
        return proc

    def start_services(self) -> None:
        if self.kafka:
            from bench.kafka_broker import tansu_binary

            url = f"tcp://127.0.0.1:{self.broker_port}"
            broker = self.spawn(
                "kafka",
                [
                    tansu_binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
            )
            wait_port(self.broker_port, broker, "tansu broker")
            print(f"  kafka-protocol broker (tansu)   127.0.0.1:{self.broker_port}")
        for name, spec in BANKS.items():
            port = free_port()
            self.bank_ports[name] = port
            sim = self.spawn(
                name,
                [
                    sys.executable,
                    "-m",
                    "gateway.cli",
                    "sandbox",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--name",
                    name,
                    "--secret",
                    f"{name}-secret",
                    "--merchant-id",
                    name,
                    "--behaviour-json",
                    json.dumps(spec["behaviour"]),
                ],
            )
            wait_port(port, sim, f"sandbox {name}")
            print(f"  sandbox bank {name:<16} 127.0.0.1:{port}  behaviour={json.dumps(spec['behaviour'])}")
        config = self.workdir / "paygate.toml"
        config.write_text(self.config_toml())
        env = {**os.environ, "PAYGATE_CONFIG": str(config)}
        subprocess.run([sys.executable, "-m", "gateway.cli", "migrate"], env=env, check=True, stdout=self.log)
        gw = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(Proc("gateway", gw))
        wait_port(self.grpc_port, gw, "gateway")
        print(f"  gateway gRPC                   127.0.0.1:{self.grpc_port}  (reflection on: grpcurl -plaintext ...)")
        print(f"  gateway callbacks (HTTP)       127.0.0.1:{self.http_port}/callbacks/<channel>")
        print(f"  gateway metrics                http://127.0.0.1:{self.metrics_port}/metrics")

    def config_toml(self) -> str:
        lines = [
            "[server]",
            f"grpc_port = {self.grpc_port}",
            f"http_port = {self.http_port}",
            f"metrics_port = {self.metrics_port}",
            "default_wait_ms = 3000",
            "grace_s = 5",
            "",
            "[database]",
            f'database = "{self.database}"',
            "",
            "[security]",
            'account_hash_key = "demo-account-hash-key-change-me"',
            "",
            f"[callers.{CALLER}]",
            f'token = "{TOKEN}"',
            "",
            "[operators.oncall]",
            f'token = "{OPERATOR_TOKEN}"',
            "",
            "[poller]",
            "interval_s = 0.2",
            "first_delay_s = 0.5",
            "schedule = [[0.5, 20], [2, 30]]",
            "",
            "[logging]",
            'format = "json"',
            "",
            "[routing]",
            "exploration = 1.0",
        ]
        if self.kafka:
            lines += [
                "",
                "[kafka]",
                "enabled = true",
                f'bootstrap_servers = "127.0.0.1:{self.broker_port}"',
                f'default_topic = "{self.topic}"',
                "enable_idempotence = false  # tansu lacks InitProducerId; production keeps it on",
            ]
        for name, spec in BANKS.items():
            fee = spec["fee"]
            lines += [
                "",
                "[[channels]]",
                f'id = "{name}"',
                'adapter = "sandbox"',
                "[channels.settings]",
                f'base_url = "http://127.0.0.1:{self.bank_ports[name]}"',
                f'merchant_id = "{name}"',
                f'secret = "{name}-secret"',
                "timeout_s = 1.5",
                "[channels.routing]",
                f"fee = {{ fixed = {fee['fixed']}, rate_ppm = {fee['rate_ppm']} }}",
            ]
        return "\n".join(lines) + "\n"

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.log.close()

    # --- the workload -----------------------------------------------------------------

    async def workload(self) -> dict[str, Any]:
        md = (("authorization", f"Bearer {TOKEN}"),)
        rng = random.Random(20261122)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.grpc_port}") as channel:
            stub = gateway_pb2_grpc.PaymentGatewayStub(channel)
            borrowers = [luhn_card(rng) for _ in range(6)]
            print("\n== 1. borrowers sign withholding agreements (签约绑卡), confirmed with the SMS code")
            for i, card in enumerate(borrowers):
                for bank in list(BANKS)[: 2 + i % 2]:
                    signed = await stub.SignAgreement(
                        pb.SignAgreementRequest(
                            request_id=f"sign-{i}-{bank}",
                            channel=bank,
                            account_no=card,
                            holder_name="王小明",
                            id_no="11010519491231002X",
                            phone="13800138000",
                            bank_code="ICBC",
                        ),
                        metadata=md,
                    )
                    code = await self.sms_code(bank, signed.agreement_no)
                    done = await stub.ConfirmAgreement(
                        pb.ConfirmAgreementRequest(agreement_no=signed.agreement_no, sms_code=code), metadata=md
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
            print("\n== 8. waiting for every unconfirmed result (callbacks and the poll queue)...")
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                pending = [rid for rid, f in flows.items() if f.status == pb.PROCESSING and not f.needs_review]
                if not pending:
                    break
                for rid in pending:
                    flows[rid] = await stub.GetFlow(pb.GetFlowRequest(request_id=rid), metadata=md)
                await asyncio.sleep(0.5)
            for rid in ("repay-pending", "repay-timeout"):
                self.print_flow(flows[rid])
            return {"flows": flows, "replayed": replayed}

    async def sms_code(self, bank: str, agreement_no: str) -> str:
        """The SMS the bank sent to the borrower's phone (read from the simulator, as a phone would)."""
        import aiomysql

        conn = await aiomysql.connect(host="127.0.0.1", user="root", password="", db=self.database)
        try:
            async with conn.cursor() as cur:
                await cur.execute("SELECT sign_ref FROM agreements WHERE agreement_no=%s", (agreement_no,))
                (sign_ref,) = await cur.fetchone()
        finally:
            conn.close()
        reply = await asyncio.to_thread(http_json, f"http://127.0.0.1:{self.bank_ports[bank]}/_admin/sms/{sign_ref}")
        return str(reply.get("code") or reply.get("sms_code"))

    @staticmethod
    def print_flow(flow: pb.Flow) -> None:
        status = pb.FlowStatus.Name(flow.status)
        route = " -> ".join(f"{a.channel}({a.code or pb.AttemptStatus.Name(a.status)})" for a in flow.attempts)
        failure = f" failure={flow.failure.code}" if flow.status == pb.FAILED else ""
        amount = f"{flow.amount.amount / 100:,.2f} {flow.amount.currency}"
        print(
            f"  {flow.request_id:<15} {pb.FlowKind.Name(flow.kind):<8} {amount:>14} {flow.account_masked:<18} "
            f"{status:<10}{failure} via {route}"
        )

    def double_debits(self, flows: dict[str, pb.Flow]) -> tuple[int, int]:
        """(requests debited more than once, total debits) from the banks' own ledgers."""
        debits: Counter[str] = Counter()
        for port in self.bank_ports.values():
            ledger = http_json(f"http://127.0.0.1:{port}/_admin/ledger")
            for order_no, n in ledger.get("debits_by_order", {}).items():
                debits[order_no] += int(n)
        doubles = 0
        for flow in flows.values():
            if flow.kind != pb.WITHHOLD:
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
            f"127.0.0.1:{self.broker_port}",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paygate demo")
    parser.add_argument("--database", default="paygate_demo")
    parser.add_argument("--no-kafka", action="store_true")
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

            with urllib.request.urlopen(f"http://127.0.0.1:{demo.metrics_port}/metrics", timeout=5) as reply:
                text = reply.read().decode()
            print(
                f"\n== channel success rates (from http://127.0.0.1:{demo.metrics_port}/metrics; "
                "Prometheus rules and the Grafana dashboard are in deploy/)"
            )
            print(success_table(text))
        except Exception as exc:  # the table is a convenience; never fail the demo on it
            print(f"  (metrics table unavailable: {exc})")
    finally:
        demo.stop_all()
    print(
        f"demo: flows={len(flows)} succeeded={statuses['SUCCEEDED']} failed={statuses['FAILED']} "
        f"processing={statuses['PROCESSING']} replayed={outcome['replayed']} double_debits={doubles}"
    )
    return 0 if doubles == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
