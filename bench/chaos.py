"""Fault injection (``make chaos`` = ``python -m bench.chaos``; ``--short`` for the test suite).

Real processes on 127.0.0.1: a tansu broker (in-memory), three ``paygate
sandbox`` banks with mixed behaviour (declines, pending results, timeouts and
5xx after the debit, unmapped codes) and two replicas of ``paygate serve``
(``gw-1``, ``gw-2``: one database, one topic). Client tasks, spread over both
replicas, drive withholds and payouts through gRPC and retry every UNAVAILABLE /
DEADLINE_EXCEEDED / connection error with the *same* request_id (backoff,
bounded) on the other replica, as a lending system behind a load balancer
must; some answered requests are sent again to check that a replay returns
the same flow. Meanwhile a chaos task, one fault at a time:

* SIGKILLs a replica (each in turn) and starts it again;
* restarts the broker (which comes back empty: see ``bench/chaos_events.py``
  for how events acknowledged by the old incarnation are still accounted for);
* disables a channel through one replica, and enables it again a few seconds
  later, timing how long every replica takes to obey (``bench/chaos_state.py``);
* switches a bank into an outage (``POST /_admin/behaviour``) and back;
* restarts MariaDB once (full run only: other agents share that server);

and a forger posts callbacks signed with a wrong key or altered after signing,
plus exact replays of genuine callbacks. Afterwards every pending result is
left to resolve (short poll schedules), and ``bench/chaos_check.py`` compares
the flows with the banks' ledgers and the topic. The last line is::

    chaos: requests=<n> crashes=<n> broker_outages=<n> db_restarts=<n> double_debits=<n> mismatches=<n> \
        lost_events=<n> stuck=<n> forged_accepted=<n> replicas=<n> state_lag_s=<s>

(one line; wrapped here)
and the exit status is non-zero when any of double_debits .. forged_accepted
is not 0 or ``state_lag_s`` exceeds 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import aiomysql
import grpc

from bench.chaos_check import FlowView, ForgedCallback, Replay, Verdict, judge
from bench.chaos_events import EventRecorder, create_topic
from bench.chaos_procs import MERCHANT_ID, OPERATOR_TOKEN, TOKEN, TOPIC, chaos_config, mysql, restart_mariadb
from bench.chaos_state import STATE_LAG_BOUND_S, StateChange, change_state, routed_lags, state_lag
from channels.sandbox import wire
from devstack.agreements import bind_card
from devstack.cards import luhn_card
from devstack.kafka import KafkaBroker
from devstack.processes import ProcessSet
from devstack.stack import GatewayProcess, SandboxProcess
from paygate.v1 import admin_pb2_grpc, gateway_pb2_grpc
from paygate.v1 import gateway_pb2 as pb

if TYPE_CHECKING:
    from paygate.v1.admin_pb2_grpc import GatewayAdminAsyncStub as AdminStub
    from paygate.v1.gateway_pb2_grpc import PaymentGatewayAsyncStub as Stub

MD = (("authorization", f"Bearer {TOKEN}"),)
OPERATOR_MD = (("authorization", f"Bearer {OPERATOR_TOKEN}"),)
REPLICAS = ("gw-1", "gw-2")
RETRY_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}
)
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]

# Each bank's random mix; magic amounts (see channels/simkit/behaviour.py) add the rest.
BANKS: dict[str, dict[str, Any]] = {
    "bank-a": {
        "p50_ms": 5,
        "p99_ms": 40,
        "declines": {"channel_busy": 0.05},
        "pending_ratio": 0.05,
        "settle_after_ms": [200, 1500],
        "timeout_ratio": 0.02,
        "error_5xx_ratio": 0.02,
        "timeout_hold_s": 2.0,
        "notify_final": True,
    },
    "bank-b": {
        "p50_ms": 10,
        "p99_ms": 80,
        "declines": {"insufficient_funds": 0.05, "bank_not_supported": 0.05},
        "pending_ratio": 0.1,
        "settle_after_ms": [300, 3000],
        "settle_success_ratio": 0.7,
        "timeout_ratio": 0.03,
        "unmapped_ratio": 0.02,
        "timeout_hold_s": 2.0,
    },
    "bank-c": {
        "p50_ms": 20,
        "p99_ms": 150,
        "pending_ratio": 0.05,
        "settle_after_ms": [200, 1000],
        "timeout_hold_s": 2.0,
    },
}

# amount % 100 -> weight: ordinary amounts (the banks' mix) and every magic fate.
SUFFIXES: list[tuple[int | None, float]] = [
    (None, 0.55),
    (1, 0.05),
    (2, 0.03),
    (3, 0.07),
    (5, 0.08),
    (6, 0.06),
    (7, 0.06),
    (8, 0.05),
    (9, 0.05),
]


@dataclass(frozen=True)
class Plan:
    load_s: float
    max_requests: int
    workers: int
    cards: int
    crashes: int
    broker_restarts: int
    state_changes: int  # a channel disabled through one replica, then enabled again
    outages: int
    db_restart: bool
    retry_budget_s: float
    settle_s: float
    forge_every_s: float

    @classmethod
    def full(cls) -> Plan:
        return cls(
            load_s=330,
            max_requests=12_000,
            workers=10,
            cards=24,
            crashes=8,
            broker_restarts=4,
            state_changes=3,
            outages=10,
            db_restart=True,
            retry_budget_s=90,
            settle_s=170,
            forge_every_s=0.5,
        )

    @classmethod
    def short(cls) -> Plan:
        return cls(
            load_s=20,
            max_requests=600,
            workers=6,
            cards=8,
            crashes=2,
            broker_restarts=1,
            state_changes=1,
            outages=1,
            db_restart=False,
            retry_budget_s=30,
            settle_s=35,
            forge_every_s=0.5,
        )


@dataclass
class Sent:
    """One request the clients issued, and what they learnt about it."""

    request_id: str
    kind: str
    message: Any
    flow_no: str = ""
    first_status: str = ""
    outcome: str = ""  # "ok", a gRPC status name, or "gave_up"
    orders: list[tuple[str, str]] = field(default_factory=list)  # (channel, channel_order_no)


@dataclass
class Counts:
    crashes: int = 0
    broker_outages: int = 0
    db_restarts: int = 0
    outages: int = 0
    freezes: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    callbacks_replayed: int = 0
    db_outage_s: float = 0.0
    gateway_downtime_s: float = 0.0


class ChaosRun:
    def __init__(self, plan: Plan, workdir: Path, database: str, seed: int) -> None:
        self.plan = plan
        self.workdir = workdir
        self.database = database
        self.rng = random.Random(seed)
        self.procs = ProcessSet(workdir / "processes.log")
        self.broker = KafkaBroker(procs=self.procs)
        self.gateways = {name: GatewayProcess(self.procs, workdir / f"paygate-{name}.toml") for name in REPLICAS}
        # the gateway passes its own callback URL with each order; this is only the banks' default
        notify = f"http://127.0.0.1:{self.gateways[REPLICAS[0]].http_port}/callbacks/"
        self.banks = {
            name: SandboxProcess(name, behaviour, notify + name, merchant_id=MERCHANT_ID)
            for name, behaviour in BANKS.items()
        }
        self.recorder = EventRecorder(self.broker.bootstrap, TOPIC)
        self.sent: dict[str, Sent] = {}
        self.replays: list[Replay] = []
        self.forged: list[ForgedCallback] = []
        self.counts = Counts()
        self.cards: list[str] = []
        self.state_changes: list[StateChange] = []
        self.state_lag_s = 0.0
        self.routed_lag: dict[str, float] = {}  # replica -> its latest attempt on a disabled channel, s late
        self._seq = 0
        self._chaos_lock = asyncio.Lock()
        self._stubs: dict[str, Stub] = {}
        self._admins: dict[str, AdminStub] = {}

    # --- setup -------------------------------------------------------------------------

    async def setup(self) -> None:
        mysql(f"DROP DATABASE IF EXISTS `{self.database}`")
        self.broker.start()
        await create_topic(self.broker.bootstrap, TOPIC)
        for bank in self.banks.values():
            bank.start(self.procs)
        for name, gateway in self.gateways.items():
            banks = list(self.banks.values())
            gateway.write_config(chaos_config(gateway.ports, self.database, self.broker.bootstrap, banks, name))
        self.gateways[REPLICAS[0]].migrate()
        for name in REPLICAS:
            self.start_gateway(name)
        await self.recorder.start()

    async def sign_agreements(self, stub: Stub) -> None:
        for i in range(self.plan.cards):
            card = luhn_card(self.rng)
            self.cards.append(card)
            for name, bank in self.banks.items():
                await bind_card(
                    stub,
                    MD,
                    request_id=f"sign-{i}-{name}",
                    channel=name,
                    card=card,
                    sms_code=bank.last_sms_code,
                    timeout=10,
                )

    # --- the clients ---------------------------------------------------------------------

    def new_request(self) -> Sent:
        self._seq += 1
        rid = f"chaos-{self._seq:06d}"
        suffix = self.rng.choices([s for s, _ in SUFFIXES], [w for _, w in SUFFIXES])[0]
        cents = self.rng.randrange(10, 100) if suffix is None else suffix
        amount = self.rng.randrange(1, 500) * 100 + cents
        money = pb.Money(amount=amount, currency="CNY")
        if self.rng.random() < 0.75:
            card = self.rng.choice(self.cards)
            message: Any = pb.WithholdRequest(
                request_id=rid, amount=money, account_no=card, bank_code="ICBC", wait_ms=1500
            )
            return Sent(rid, "withhold", message)
        account = f"6217{self.rng.randrange(10**12):012d}"
        message = pb.PayoutRequest(
            request_id=rid, amount=money, account_no=account, account_name="王小明", bank_code="ICBC", wait_ms=1500
        )
        return Sent(rid, "payout", message)

    async def call(self, replica: int, sent: Sent) -> tuple[str, pb.Flow | None]:
        """Send ``sent`` until it gets an answer, retrying transport errors with the same request_id.

        The first try goes to replica number ``replica``; each retry to the
        next one, as a load balancer moves off a replica that does not answer.
        """
        deadline = time.monotonic() + self.plan.retry_budget_s
        backoff = 0.1
        while True:
            stub = self._stubs[REPLICAS[replica % len(REPLICAS)]]
            method: Any = stub.Withhold if sent.kind == "withhold" else stub.Payout
            self.counts.calls["rpc"] += 1
            try:
                return "ok", await method(sent.message, metadata=MD, timeout=6)
            except grpc.aio.AioRpcError as exc:
                self.counts.calls[exc.code().name] += 1
                if exc.code() not in RETRY_CODES:
                    return exc.code().name, None
            replica += 1
            if time.monotonic() + backoff > deadline:
                return "gave_up", None
            self.counts.calls["retries"] += 1
            await asyncio.sleep(backoff * (0.5 + self.rng.random()))
            backoff = min(backoff * 2, 2.0)

    async def client(self, replica: int, started: float, load_until: float) -> None:
        # Paced: request n is due at started + n / rate, so the load (and every fault) spans the whole
        # phase however fast this machine is; a slower gateway simply gets fewer requests.
        rate = self.plan.max_requests / self.plan.load_s
        while time.monotonic() < load_until and self._seq < self.plan.max_requests:
            due = started + self._seq / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
                continue  # another client may have taken this slot meanwhile
            sent = self.new_request()
            self.sent[sent.request_id] = sent
            outcome, flow = await self.call(replica, sent)
            sent.outcome = outcome
            if flow is None:
                continue
            sent.flow_no = flow.flow_no
            sent.first_status = pb.FlowStatus.Name(flow.status)
            sent.orders = [(a.channel, a.channel_order_no) for a in flow.attempts]
            if self.rng.random() < 0.05:
                again_outcome, again = await self.call(replica + 1, sent)  # the replay on the other replica
                if again is not None:
                    self.replays.append(Replay(sent.request_id, flow.flow_no, again.flow_no, again.replayed))
                else:
                    self.counts.calls[f"replay_{again_outcome}"] += 1

    # --- faults --------------------------------------------------------------------------

    def start_gateway(self, name: str) -> None:
        self.gateways[name].start(timeout=60, wait_callbacks=True)

    async def crash_gateway(self) -> None:
        """SIGKILL the replicas in turn, and start the victim again (with the same replica_id)."""
        name = REPLICAS[self.counts.crashes % len(REPLICAS)]
        began = time.monotonic()
        self.gateways[name].kill()
        self.counts.crashes += 1
        await asyncio.sleep(self.rng.uniform(0.5, 2.5))
        await asyncio.to_thread(self.start_gateway, name)
        self.counts.gateway_downtime_s += time.monotonic() - began

    def freeze_gateways(self) -> None:
        for gateway in self.gateways.values():
            gateway.freeze()

    def thaw_gateways(self) -> None:
        for gateway in self.gateways.values():
            gateway.thaw()

    async def restart_broker(self) -> None:
        # Freeze the relays so nothing more is acknowledged, read the old log to its end, then kill it.
        self.freeze_gateways()
        self.counts.freezes += 1
        try:
            if not await self.recorder.catch_up(timeout_s=15):
                self.recorder.log.unverified_restarts += 1
            await self.recorder.stop()
            self.broker.kill()
        finally:
            self.thaw_gateways()
        self.counts.broker_outages += 1
        await asyncio.sleep(self.rng.uniform(1.0, 4.0))
        # Frozen again while the new broker starts, so the topic exists before the relay's first request.
        # Without this, tansu (creating the topic for the relay and for us at once) was seen to log
        # AlreadyExists on produce, report end offsets below what it served, and acknowledge batches
        # that no fetch ever returned: lost events that are the test broker's, not the gateway's.
        self.freeze_gateways()
        try:
            self.broker.start()
            await create_topic(self.broker.bootstrap, TOPIC)
            await self.recorder.start()
        finally:
            self.thaw_gateways()

    async def disable_and_enable(self) -> None:
        """An operator disables a bank through one replica (each in turn), then enables it through it again."""
        through = REPLICAS[len(self.state_changes) // 2 % len(REPLICAS)]
        channel = self.rng.choice(list(self.banks))
        disabled = await change_state(self._admins, through, channel, "DISABLED", OPERATOR_MD)
        await asyncio.sleep(self.rng.uniform(2.0, 4.0))  # the clients keep sending meanwhile
        enabled = await change_state(self._admins, through, channel, "ENABLED", OPERATOR_MD)
        disabled.ends_at = enabled.sent_at
        self.state_changes += [disabled, enabled]
        lags = ", ".join(
            f"{c.state.lower()} {n} {lag:.2f} s" for c in (disabled, enabled) for n, lag in c.listed_lag.items()
        )
        print(f"           {channel} through {through}: {lags}", flush=True)

    async def outage(self, name: str, duration_s: float) -> None:
        bank = self.banks[name]
        await asyncio.to_thread(bank.set_behaviour, {"outage": True})
        self.counts.outages += 1
        try:
            await asyncio.sleep(duration_s)
        finally:
            await asyncio.to_thread(bank.set_behaviour, {"outage": False})

    async def restart_db(self) -> None:
        self.counts.db_outage_s += await asyncio.to_thread(restart_mariadb)
        self.counts.db_restarts += 1

    def schedule(self) -> list[tuple[float, str]]:
        """(offset in the load phase, fault), spread evenly with jitter, never two at the same moment."""
        plan = self.plan
        faults = ["crash"] * plan.crashes + ["broker"] * plan.broker_restarts + ["state"] * plan.state_changes
        faults += ["db"] * int(plan.db_restart)
        self.rng.shuffle(faults)
        step = plan.load_s * 0.85 / (len(faults) + 1)
        return [(step * (i + 1) + self.rng.uniform(-0.2, 0.2) * step, fault) for i, fault in enumerate(faults)]

    async def chaos(self, started: float) -> None:
        actions: dict[str, Callable[[], Awaitable[None]]] = {
            "crash": self.crash_gateway,
            "broker": self.restart_broker,
            "state": self.disable_and_enable,
            "db": self.restart_db,
        }
        for offset, fault in self.schedule():
            await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
            print(f"  t={time.monotonic() - started:6.1f}s  {fault}", flush=True)
            async with self._chaos_lock:
                await actions[fault]()

    async def outages(self, started: float) -> None:
        plan = self.plan
        step = plan.load_s * 0.8 / (plan.outages + 1)
        for i in range(plan.outages):
            await asyncio.sleep(max(0.0, started + step * (i + 0.5) - time.monotonic()))
            name = self.rng.choice(list(self.banks))
            await self.outage(name, min(step * 0.6, self.rng.uniform(3, 10)))

    # --- callbacks -------------------------------------------------------------------------

    async def post_callback(
        self, http: aiohttp.ClientSession, channel: str, body: bytes, headers: dict[str, str]
    ) -> int | None:
        port = self.gateways[self.rng.choice(REPLICAS)].http_port
        url = f"http://127.0.0.1:{port}/callbacks/{channel}"
        try:
            async with http.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as reply:
                await reply.read()
                return reply.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def forge(self, http: aiohttp.ClientSession, sent: Sent) -> None:
        """A wrong-key callback and a tampered one, both claiming the opposite of what the flow said."""
        channel, order_no = self.rng.choice(sent.orders)
        claim = "FAILED" if sent.first_status == "SUCCEEDED" else "SUCCEEDED"
        amount = int(sent.message.amount.amount)
        code = "0000" if claim == "SUCCEEDED" else wire.raw_code_for("INSUFFICIENT_FUNDS")
        kind = sent.kind
        lie = wire.encode(wire.OrderReply(code, "ok", order_no, claim, amount, "FORGED1", None, kind))
        secret = self.banks[channel].secret
        wrong_key = wire.sign_headers(MERCHANT_ID, secret + "-guess", "POST", wire.CALLBACK_PATH, lie)
        self.forged.append(
            ForgedCallback(channel, order_no, claim, await self.post_callback(http, channel, lie, wrong_key))
        )
        honest = wire.encode(wire.OrderReply("3001", "processing", order_no, "PENDING", amount, "", None, kind))
        signed_honest = wire.sign_headers(MERCHANT_ID, secret, "POST", wire.CALLBACK_PATH, honest)
        self.forged.append(
            ForgedCallback(channel, order_no, claim, await self.post_callback(http, channel, lie, signed_honest))
        )

    async def forger(self, http: aiohttp.ClientSession, load_until: float) -> None:
        while time.monotonic() < load_until:
            await asyncio.sleep(self.plan.forge_every_s)
            answered = [s for s in list(self.sent.values())[-300:] if s.orders]
            if answered:
                await self.forge(http, self.rng.choice(answered))

    async def replay_genuine_callbacks(self, http: aiohttp.ClientSession, per_bank: int = 10) -> None:
        """Exact replays (same headers, same nonce) of correctly signed callbacks about final orders."""
        for name, bank in self.banks.items():
            dump = await asyncio.to_thread(bank.ledger)
            final = [e for e in dump["entries"] if e["status"] in ("SUCCEEDED", "FAILED")]
            for entry in self.rng.sample(final, min(per_bank, len(final))):
                try:
                    raw = wire.raw_code_for(entry["code"])
                except KeyError:
                    continue
                reply = wire.OrderReply(
                    raw, "", entry["order_no"], entry["status"], entry["amount"], entry["txn_id"], None, entry["kind"]
                )
                body = wire.encode(reply)
                headers = wire.sign_headers(MERCHANT_ID, bank.secret, "POST", wire.CALLBACK_PATH, body)
                for _ in range(3):
                    if await self.post_callback(http, name, body, headers) is not None:
                        self.counts.callbacks_replayed += 1

    # --- the end ---------------------------------------------------------------------------

    async def final_flows(self, settle_until: float) -> dict[str, FlowView]:
        """GetFlow (from both replicas) for every request until none is left PROCESSING without review."""
        views: dict[str, FlowView] = {}
        todo = list(self.sent)
        while True:
            for start in range(0, len(todo), 50):
                chunk = todo[start : start + 50]
                for rid, view in zip(
                    chunk, await asyncio.gather(*(self.get_flow(r, i) for i, r in enumerate(chunk))), strict=True
                ):
                    if view is not None:
                        views[rid] = view
            todo = [rid for rid, v in views.items() if v.status == "PROCESSING" and not v.needs_review]
            if not todo or time.monotonic() > settle_until:
                return views
            await asyncio.sleep(1.0)

    async def get_flow(self, rid: str, replica: int = 0) -> FlowView | None:
        for attempt in range(20):
            stub = self._stubs[REPLICAS[(replica + attempt) % len(REPLICAS)]]
            try:
                flow = await stub.GetFlow(pb.GetFlowRequest(request_id=rid), metadata=MD, timeout=5)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                await asyncio.sleep(0.5)
                continue
            return FlowView(
                request_id=rid,
                flow_no=flow.flow_no,
                kind=pb.FlowKind.Name(flow.kind),
                status=pb.FlowStatus.Name(flow.status),
                needs_review=flow.needs_review,
                orders=tuple(a.channel_order_no for a in flow.attempts),
            )
        raise RuntimeError(f"GetFlow({rid}) kept failing")

    async def wait_for_events(self, views: dict[str, FlowView], until: float) -> None:
        terminal = {v.flow_no for v in views.values() if v.status in ("SUCCEEDED", "FAILED")}
        while time.monotonic() < until:
            if terminal <= set(self.recorder.log.results_by_flow()):
                return
            await asyncio.sleep(0.5)

    async def run(self) -> tuple[Verdict, dict[str, FlowView]]:
        plan = self.plan
        await self.setup()
        async with contextlib.AsyncExitStack() as stack:
            http = await stack.enter_async_context(aiohttp.ClientSession())
            for name, gateway in self.gateways.items():
                address = f"127.0.0.1:{gateway.grpc_port}"
                channel = await stack.enter_async_context(grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS))
                self._stubs[name] = gateway_pb2_grpc.PaymentGatewayStub(channel)
                self._admins[name] = admin_pb2_grpc.GatewayAdminStub(channel)
            await self.sign_agreements(self._stubs[REPLICAS[0]])
            print(
                f"  {len(self.cards)} cards bound on {len(self.banks)} banks; load for {plan.load_s:.0f} s", flush=True
            )
            started = time.monotonic()
            load_until = started + plan.load_s
            background = [
                asyncio.create_task(self.chaos(started)),
                asyncio.create_task(self.outages(started)),
                asyncio.create_task(self.forger(http, load_until)),
            ]
            clients = [asyncio.create_task(self.client(n, started, load_until)) for n in range(plan.workers)]
            try:
                await asyncio.gather(*clients, *background)
            finally:
                for task in clients + background:
                    task.cancel()
            print(f"  load done: {len(self.sent)} requests in {time.monotonic() - started:.0f} s; settling", flush=True)
            for bank in self.banks.values():
                await asyncio.to_thread(bank.set_behaviour, {"outage": False})
            await self.replay_genuine_callbacks(http)
            settle_until = time.monotonic() + plan.settle_s
            views = await self.final_flows(settle_until)
            await self.wait_for_events(views, time.monotonic() + 30)
            ledgers = {name: await asyncio.to_thread(bank.ledger) for name, bank in self.banks.items()}
            # A flow that was still moving when the ledgers were read is fetched once more.
            moving = [rid for rid, v in views.items() if v.status == "PROCESSING"]
            views.update({rid: v for rid in moving if (v := await self.get_flow(rid)) is not None})
        verdict = judge(views.values(), ledgers, self.recorder.log, self.forged, self.replays)
        if verdict.lost_events:
            await self.explain_lost_events(views, verdict)
        self.routed_lag = routed_lags(self.state_changes, await self.disabled_attempts())
        self.state_lag_s = state_lag(self.state_changes, self.routed_lag)
        return verdict, views

    async def disabled_attempts(self) -> list[tuple[str, str, float]]:
        """(replica, channel, created at) of the attempts recorded on a channel while it was disabled."""
        out: list[tuple[str, str, float]] = []
        for change in self.state_changes:
            if change.state != "DISABLED":
                continue
            ends = change.ends_at if change.ends_at is not None else time.time()
            rows = await self.query(
                "SELECT r.replica_id, a.channel, a.created_at FROM attempts a"
                " JOIN replicas r ON r.incarnation = a.incarnation"
                " WHERE a.channel = %s AND a.created_at >= %s AND a.created_at < %s",
                [change.channel, _naive_utc(change.sent_at), _naive_utc(ends)],
            )
            out += [(replica, channel, created.replace(tzinfo=UTC).timestamp()) for replica, channel, created in rows]
        return out

    async def query(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        """One read of the run's database (diagnosis and the state lag; never the verdict's money checks)."""
        conn = await aiomysql.connect(host="127.0.0.1", user="root", password="", db=self.database, autocommit=True)
        try:
            async with conn.cursor() as cur:
                await cur.execute(sql, args)
                return list(await cur.fetchall())
        finally:
            conn.close()

    async def explain_lost_events(self, views: dict[str, FlowView], verdict: Verdict) -> None:
        """Diagnosis only (the figure stays): was each lost result ever marked published, and when?

        Unpublished at the end: the relay did not deliver it. Marked published
        while a broker incarnation was alive: that broker acknowledged it, and
        the checker read that incarnation to the end offsets it reported before
        it was killed, so the event was acknowledged but never readable.
        """
        seen = set(self.recorder.log.results_by_flow())
        lost = [v.flow_no for v in views.values() if v.status in ("SUCCEEDED", "FAILED") and v.flow_no not in seen]
        marks = ", ".join(["%s"] * len(lost))
        rows = await self.query(
            "SELECT f.flow_no, o.event_id, o.published_at, o.attempts, o.last_error FROM flows f"
            " LEFT JOIN outbox o ON o.flow_id = f.id AND o.event_type = 'FLOW_RESULT'"
            f" WHERE f.flow_no IN ({marks})",
            lost,
        )
        lives = self.recorder.log.lives
        for flow_no, event_id, published_at, attempts, last_error in rows:
            if event_id is None:
                verdict.note("lost_no_outbox_row")
            elif published_at is None:
                verdict.note("lost_unpublished")
                verdict.example(f"unpublished {event_id} of {flow_no}: attempts={attempts} {last_error[:80]}")
            else:
                alive = [n for n, x in enumerate(lives) if x.started <= published_at <= (x.ended or datetime.max)]
                verdict.note(f"lost_published_in_incarnation_{alive[0] if alive else 'none'}")

    async def close(self) -> None:
        await self.recorder.stop()
        self.procs.stop_all(timeout=5)


def _naive_utc(epoch_s: float) -> datetime:
    """Epoch seconds as the naive UTC datetime the gateway's tables hold."""
    return datetime.fromtimestamp(epoch_s, UTC).replace(tzinfo=None)


def report(run: ChaosRun, verdict: Verdict, views: dict[str, FlowView], elapsed: float) -> str:
    counts = run.counts
    statuses = Counter(v.status for v in views.values())
    outcomes = Counter(s.outcome for s in run.sent.values())
    print("\n== chaos summary")
    print(f"  elapsed {elapsed:.0f} s; requests {len(run.sent)} ({dict(Counter(s.kind for s in run.sent.values()))})")
    print(f"  client outcomes {dict(outcomes)}; gRPC calls {dict(counts.calls)}")
    print(f"  flows {dict(statuses)}; without a flow {len(run.sent) - len(views)}")
    print(
        f"  faults: gateway SIGKILLs {counts.crashes} (down {counts.gateway_downtime_s:.1f} s in all), "
        f"broker restarts {counts.broker_outages}, gateway freezes {counts.freezes}, bank outages {counts.outages}, "
        f"MariaDB restarts {counts.db_restarts} (down {counts.db_outage_s:.1f} s)"
    )
    print(f"  callbacks: forged/tampered sent {len(run.forged)}, genuine replays {counts.callbacks_replayed}")
    for change in run.state_changes:
        lags = ", ".join(f"{name} {lag:.2f} s" for name, lag in sorted(change.listed_lag.items()))
        print(f"  {change.channel} {change.state.lower()} through {change.through}: listed by {lags}")
    routed = ", ".join(f"{name} {lag:.2f} s" for name, lag in sorted(run.routed_lag.items())) or "none"
    print(f"  last attempt on a disabled channel after the call: {routed}")
    print(f"  state lag {run.state_lag_s:.2f} s (bound {STATE_LAG_BOUND_S:.0f} s; listed and routed)")
    for n, life in enumerate(run.recorder.log.lives):
        ended = f"{life.ended:%H:%M:%S}" if life.ended else "end"
        ends = f", end offsets {life.end_offsets} (sum {sum(life.end_offsets.values())})" if life.ended else ""
        print(f"  broker life {n}: {life.started:%H:%M:%S}-{ended}, read {life.read} messages{ends}")
    print(f"  notes {dict(sorted(verdict.notes.items()))}")
    for example in verdict.examples:
        print(f"  ! {example}")
    return (
        f"chaos: requests={len(run.sent)} crashes={counts.crashes} broker_outages={counts.broker_outages} "
        f"db_restarts={counts.db_restarts} double_debits={verdict.double_debits} mismatches={verdict.mismatches} "
        f"lost_events={verdict.lost_events} stuck={verdict.stuck} forged_accepted={verdict.forged_accepted} "
        f"replicas={len(run.gateways)} state_lag_s={run.state_lag_s:.2f}"
    )


async def _main(plan: Plan, workdir: Path, database: str, seed: int, keep_db: bool) -> int:
    run = ChaosRun(plan, workdir, database, seed)
    began = time.monotonic()
    try:
        verdict, views = await run.run()
    finally:
        await run.close()
        if not keep_db:
            mysql(f"DROP DATABASE IF EXISTS `{database}`")
    print(report(run, verdict, views, time.monotonic() - began), flush=True)
    return 0 if verdict.ok and run.state_lag_s <= STATE_LAG_BOUND_S else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--short", action="store_true", help="a few hundred requests, one crash per replica, one broker restart"
    )
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--database", default=None, help="database to create (and drop) for the run")
    parser.add_argument("--keep-db", action="store_true", help="leave the database for inspection")
    args = parser.parse_args(argv)
    plan = Plan.short() if args.short else Plan.full()
    database = args.database or f"paygate_chaos_{'short_' if args.short else ''}{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix="paygate-chaos-"))
    print(f"paygate chaos ({'short' if args.short else 'full'}): logs in {workdir / 'processes.log'}", flush=True)
    try:
        return asyncio.run(_main(plan, workdir, database, args.seed, args.keep_db))
    except Exception:
        traceback.print_exc()
        print("chaos: the run itself failed (see above); no figures", flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
