"""An in-process gateway wired to real sandbox simulators over HTTP, for integration tests."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc

from channels.sandbox.simulator import SandboxSimulator
from channels.simkit import Behaviour, Ledger, create_simulator
from devstack import config as devconfig
from gateway.app import Gateway
from gateway.config import from_mapping
from gateway.store.db import DatabaseConfig
from paygate.v1 import admin_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from tests.support.services import migrated

CALLER_TOKENS = {"loans": "loans-token-0123456789", "collections": "collections-token-0123456789"}
OPERATOR_TOKEN = "operator-token-0123456789"


@dataclass
class Harness:
    gateway: Gateway
    sims: dict[str, Any]
    channel: grpc.aio.Channel
    stubs: dict[str, gateway_pb2_grpc.PaymentGatewayStub] = field(default_factory=dict)
    admin: admin_pb2_grpc.GatewayAdminStub | None = None

    def md(self, caller: str = "loans") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {CALLER_TOKENS[caller]}"),)

    @property
    def op_md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {OPERATOR_TOKEN}"),)

    @property
    def stub(self) -> gateway_pb2_grpc.PaymentGatewayStub:
        return gateway_pb2_grpc.PaymentGatewayStub(self.channel)

    def debits(self) -> dict[str, int]:
        """channel order no -> debit count, across every simulator's ledger."""
        out: dict[str, int] = {}
        for sim in self.sims.values():
            for order, n in sim.ledger.debits_by_order().items():
                out[order] = out.get(order, 0) + n
        return out

    async def bind_card(
        self, card: str, channels: list[str], caller: str = "loans", bank: str = "ICBC"
    ) -> list[gateway_pb2.Agreement]:
        out = []
        for ch in channels:
            sign = await self.stub.SignAgreement(
                gateway_pb2.SignAgreementRequest(
                    request_id=f"sign-{ch}-{card[-6:]}-{random.randrange(10**9)}",
                    channel=ch,
                    account_no=card,
                    holder_name="张三",
                    id_no="11010519491231002X",
                    phone="13800138000",
                    bank_code=bank,
                ),
                metadata=self.md(caller),
            )
            code = self.sims[ch].last_sms("13800138000").code  # what the borrower's phone received
            confirmed = await self.stub.ConfirmAgreement(
                gateway_pb2.ConfirmAgreementRequest(agreement_no=sign.agreement_no, sms_code=code),
                metadata=self.md(caller),
            )
            out.append(confirmed)
        return out


def gateway_config(
    db: DatabaseConfig,
    sims: Mapping[str, Any],
    *,
    adapters: Mapping[str, str] | None = None,
    channel_settings: Mapping[str, Mapping[str, Any]] | None = None,
    channel_routing: Mapping[str, Mapping[str, Any]] | None = None,
    routing: Mapping[str, Any] | None = None,
    poller: Mapping[str, Any] | None = None,
    kafka: Mapping[str, Any] | None = None,
    cashier: Mapping[str, Any] | None = None,
    plans: Mapping[str, Any] | None = None,
    banks: Mapping[str, Any] | None = None,
    server: Mapping[str, Any] | None = None,
    console: Mapping[str, Any] | None = None,
    callers: Mapping[str, Any] | None = None,
    operators: Mapping[str, Any] | None = None,
    security: Mapping[str, Any] | None = None,
    funders: Mapping[str, Any] | None = None,
    settlement: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The in-process gateway's configuration; ``server``, ``callers``, ``operators``, ``security`` replace or
    add to the defaults (``callers``/``operators``: name -> token, or name -> table)."""
    channels = []
    for name, sim in sims.items():
        adapter = (adapters or {}).get(name, "sandbox")
        settings = dict(sim.adapter_settings())
        settings.pop("notify_url", None)  # the gateway passes its own callback URL per order
        if adapter == "sandbox":
            settings.update({"timeout_s": 2.0, "connect_timeout_s": 1.0})
        settings.update((channel_settings or {}).get(name, {}))
        channels.append(
            {
                "id": name,
                "adapter": adapter,
                "settings": settings,
                "routing": dict((channel_routing or {}).get(name, {})),
            }
        )
    return devconfig.gateway_config(
        devconfig.GatewayPorts(0, 0, 0),
        server={"default_wait_ms": 8000, "grace_s": 2, **(server or {})},
        database={
            "host": db.host,
            "port": db.port,
            "database": db.database,
            "pool_min": 1,
            "pool_max": 40,
            "driver": db.driver,
        },
        callers=CALLER_TOKENS if callers is None else callers,
        operators={"ops": {"token": OPERATOR_TOKEN, "role": "approver"}} if operators is None else operators,
        **({"security": dict(security)} if security is not None else {}),
        channels=channels,
        routing=dict(routing or {}),
        poller=dict(poller or {"interval_s": 0.1, "first_delay_s": 0.3, "schedule": [[0.3, 20], [1.0, 30]]}),
        logging={"format": "text", "level": "WARNING"},
        kafka=None if kafka is None else {"enabled": True, **kafka},
        cashier=dict(cashier or {}),
        **({"plans": dict(plans)} if plans is not None else {}),
        **({"banks": dict(banks)} if banks is not None else {}),
        **({"console": dict(console)} if console is not None else {}),
        **({"funders": dict(funders)} if funders is not None else {}),
        **({"settlement": dict(settlement)} if settlement is not None else {}),
    )


@asynccontextmanager
async def running_gateway(
    db: DatabaseConfig,
    behaviours: Mapping[str, Behaviour],
    *,
    floats: Mapping[str, int] | None = None,
    clock: Any = None,
    credentials: grpc.ChannelCredentials | None = None,
    **config_kw: Any,
) -> AsyncIterator[Harness]:
    """Sandbox simulators (one per behaviour) plus a started gateway; ``floats`` sets merchant floats.

    ``clock`` is the plan executor's (tests/fakes/clock.py), ``plans`` (in ``config_kw``) its [plans] table.
    ``credentials``: the harness's channel talks TLS with these instead of plaintext.
    """
    adapters: Mapping[str, str] = config_kw.get("adapters") or {}
    sims: dict[str, Any] = {}
    for name, b in behaviours.items():
        ledger = Ledger(merchant_float=(floats or {}).get(name, 10_000_000_000), txn_prefix=name[:6].upper())
        adapter = adapters.get(name, "sandbox")
        if adapter == "sandbox":
            sims[name] = SandboxSimulator(b, name=name, secret=f"{name}-secret", ledger=ledger)
        else:
            sims[name] = create_simulator(adapter, b, ledger=ledger, key_size=2048)
    for sim in sims.values():
        await sim.start()
    await migrated(db)
    raw = gateway_config(db, sims, **config_kw)
    gateway = Gateway.build(from_mapping(raw), clock=clock)
    await gateway.start()
    if credentials is not None:
        channel = grpc.aio.secure_channel(f"127.0.0.1:{gateway.grpc_port}", credentials)
    else:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    harness = Harness(gateway, sims, channel)
    harness.admin = admin_pb2_grpc.GatewayAdminStub(channel)
    try:
        yield harness
    finally:
        await channel.close()
        stopping = asyncio.ensure_future(gateway.stop())
        done, _ = await asyncio.wait({stopping}, timeout=20)
        if not done:
            for task in asyncio.all_tasks():
                task.print_stack(limit=12, file=sys.stderr)
            raise AssertionError("gateway.stop() did not finish in 20 s; task stacks above")
        stopping.result()
        for sim in sims.values():
            await sim.stop()
