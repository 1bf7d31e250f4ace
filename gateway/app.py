"""The composition root: builds every component from the config, starts and stops them in order.

Start order: database pool → channel adapters → this replica's run registered
(gateway/replicas.py) and the router warmed from recent attempts and the
operator-set channel states, then kept in step with the other replicas →
positions (synced from channels without one) → poller (crash recovery first,
of what no live replica works on) → outbox relay → reconciliation scheduler
(when ``[reconciliation.run_at]`` names channels) → TLS certificates (checked;
a plaintext listener is warned about) → callback HTTP server → metrics HTTP
server → console HTTP server (when ``[console] enabled``) → gRPC server →
health SERVING → plan executor; then the certificate files are looked at every
``reload_check_s`` and re-read when they change.

Shutdown order (SIGTERM/SIGINT), written down once here:
1. health NOT_SERVING, so load balancers stop sending;
2. the gRPC server stops accepting and gives in-flight RPCs ``grace_s``;
3. the plan executor stops claiming; its attempts and then background channel
   calls get what is left of the grace, then are cancelled (their attempts stay
   SENDING and are queried at next start; agreement calls likewise, found by the
   agreements' recovery sweep; instalments come back by lease);
4. the reconciliation scheduler stops (a run cut short is taken over after its
   claim's lease), then poller and relay (the relay flushes what it has produced);
5. the replica run is marked stopped: the others may take what it left at once;
6. HTTP servers close (callbacks, metrics, console: a console request in
   flight finishes, as an admin RPC would have); channel adapters close; the
   pool closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from channels.registry import ChannelRegistry, ChannelSpec
from gateway import metrics
from gateway.agreements import AgreementService
from gateway.api.admin import GatewayAdminServicer
from gateway.api.auth import GatewayInterceptor
from gateway.api.plans import PlanAdminServicer, WithholdingPlansServicer
from gateway.api.recon import ReconciliationServicer
from gateway.api.servicer import PaymentGatewayServicer
from gateway.api.splits import SplitSettlementServicer
from gateway.businessday import BusinessCalendar
from gateway.callbacks import CallbackHandler
from gateway.collections import CollectionService, check_preference
from gateway.config import Config, ConfigError, start_up_errors
from gateway.domain import new_ulid
from gateway.flows import FlowService, FlowSettings
from gateway.obs.series import declare_plan_series, declare_series
from gateway.operations import Operations
from gateway.planner import Planner
from gateway.plans.clock import Clock, SystemClock
from gateway.plans.executor import PlanExecutor
from gateway.plans.pacing import SendPacer, paced_registry
from gateway.plans.policy import Schedule as PlanSchedule
from gateway.plans.ratelimit import RateLimiter
from gateway.plans.routing import RateAwarePlanner
from gateway.plans.sealing import AccountSealer
from gateway.plans.service import PlanService
from gateway.poller import Poller, Schedule, default_owner
from gateway.ports import PositionStore
from gateway.positions import PositionService
from gateway.recon.scheduler import ReconScheduler
from gateway.recon.service import ChannelBooks, Reconciler
from gateway.replicas import ReplicaSync
from gateway.resolutions import ManualResolutions
from gateway.retention import Retention
from gateway.security.principals import Principals
from gateway.security.tls import CertificateWatcher, plaintext_warnings
from gateway.splits.funders import Funders
from gateway.splits.settlement import SettlementService
from gateway.store import card_usage
from gateway.store.agreements import MySQLAgreementStore
from gateway.store.audit import MySQLAuditLog
from gateway.store.channel_states import MySQLChannelStates
from gateway.store.collections import MySQLCollectionStore
from gateway.store.db import Database
from gateway.store.discrepancies import MySQLDiscrepancies
from gateway.store.flows import MySQLFlowStore
from gateway.store.observations import MySQLObservations
from gateway.store.outbox import MySQLOutboxAdmin
from gateway.store.plans import MySQLPlanStore
from gateway.store.poll_queue import MySQLPollQueue
from gateway.store.positions import MySQLPositionStore
from gateway.store.recon import MySQLReconStore
from gateway.store.replicas import MySQLReplicas
from gateway.store.resolutions import MySQLResolutions
from gateway.store.splits import MySQLSplitStore
from gateway.validation import accepted_banks
from paygate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    plans_pb2,
    plans_pb2_grpc,
    recon_pb2,
    recon_pb2_grpc,
    splits_pb2,
    splits_pb2_grpc,
)
from routing.config import FeeSchedule, parse_channel_profiles
from routing.engine import Router

log = logging.getLogger(__name__)

WARM_WINDOW_S = 6 * 3600


def build_registry(config: Config) -> ChannelRegistry:
    """The adapters, each reading its ``[channels.settings]``; raises ConfigError naming the key."""
    specs = [ChannelSpec(c.channel_id, c.adapter, c.settings, c.key) for c in config.channels]
    with start_up_errors():
        return ChannelRegistry.build(specs)


def build_router(config: Config, registry: ChannelRegistry) -> Router:
    """The router: ``[routing]`` plus each channel's routing table over its adapter's capabilities."""
    capabilities: dict[str, dict[str, Any]] = {}
    for channel_id, channel in registry.items():
        capabilities[channel_id] = {
            "default_operations": frozenset(channel.operations),
            "default_currencies": frozenset(channel.currencies),
            "default_banks": channel.banks,
            "default_cashier_kinds": frozenset(channel.cashier_kinds),
        }
    with start_up_errors():
        profiles = parse_channel_profiles(
            [(f"{c.key}.routing", c.channel_id, c.routing) for c in config.channels], capabilities
        )
    return Router(profiles, config.routing)


def build_reconciler(
    config: Config,
    db: Database,
    registry: ChannelRegistry,
    router: Router,
    on_outbox: Callable[[], None] | None = None,
) -> Reconciler:
    """Reconciliation over every configured channel: its adapter (statements) and its routing fee table.

    A channel whose fee table is the default (all zero) has no fee expectation beyond what the channel
    reported on each result; its statement's fees are then checked against those only.
    """
    books = {}
    for channel_id, channel in registry.items():
        fee = router.profile(channel_id).fee
        books[channel_id] = ChannelBooks(channel, None if fee == FeeSchedule() else fee)
    return Reconciler(
        MySQLReconStore(db),
        MySQLFlowStore(db, group_commit=False),
        books,
        BusinessCalendar(config.business.zone),
        config.reconciliation,
        on_outbox=on_outbox,
    )


@dataclass
class Gateway:
    """Every live component of one gateway process."""

    config: Config
    db: Database
    registry: ChannelRegistry
    router: Router
    planner: Planner
    flows: FlowService
    agreements: AgreementService
    positions: PositionStore
    poller: Poller
    collections: CollectionService
    replica: ReplicaSync
    relay: Any = None
    plans: PlanService | None = None
    executor: PlanExecutor | None = None
    plan_flows: FlowService | None = None  # the executor's withholds (rate-aware routing, same use case)
    settlement: SettlementService = field(init=False)  # joint-loan funders' daily settlement (built in build)
    retention: Retention = field(init=False)  # deletes rows past their retention (built in build)
    recon: Reconciler | None = None
    recon_scheduler: ReconScheduler | None = None
    grpc_server: grpc.aio.Server | None = None
    health: health.aio.HealthServicer | None = None  # type: ignore[name-defined]
    runners: list[web.AppRunner] = field(default_factory=list)
    grpc_port: int = 0
    http_port: int = 0
    metrics_port: int = 0
    console_port: int = 0
    certificates: list[CertificateWatcher] = field(default_factory=list)
    _sampler: asyncio.Task[None] | None = None
    _tls_reload: asyncio.Task[None] | None = None
    _stopped: bool = False

    # --- construction -------------------------------------------------------------

    @classmethod
    def build(cls, config: Config, *, clock: Clock | None = None) -> Gateway:
        """Every component from ``config``; ``clock`` is the plan executor's (tests pass one they move)."""
        db = Database(config.database)
        registry = build_registry(config)
        router = build_router(config, registry)
        positions = MySQLPositionStore(db)
        needs_usage = any(
            router.profile(c).per_card_daily_attempts or router.profile(c).per_card_daily_amount for c in registry
        )
        planner = Planner(
            router,
            positions,
            MySQLObservations(db),
            needs_card_usage=needs_usage,
            calendar=BusinessCalendar(config.business.zone),
        )
        replica_id = config.server.replica_id or default_owner()
        replica = ReplicaSync(
            config.replicas,
            replica_id=replica_id,
            incarnation=new_ulid(),
            store=MySQLReplicas(db),
            channel_states=MySQLChannelStates(db),
            observations=planner.observations,
            planner=planner,
        )
        store = MySQLFlowStore(
            db,
            group_commit=config.database.group_commit,
            workers=config.database.group_commit_workers,
            max_batch=config.database.group_commit_max_batch,
            incarnation=replica.incarnation,
        )
        relay = None
        if config.kafka is not None and config.kafka.enabled:
            from gateway.outbox.relay import OutboxRelay

            relay = OutboxRelay(db, config.kafka)
        flows = FlowService(
            store=store,
            agreements=MySQLAgreementStore(db),
            registry=registry,
            planner=planner,
            settings=FlowSettings(
                callback_base=config.server.callback_base,
                account_hash_key=config.account_hash_key.reveal().encode(),
                max_attempts=router.config.max_attempts_per_flow,
                poll_first_delay_s=config.poller.first_delay_s,
                deadline_margin_s=config.server.deadline_margin_ms / 1000,
            ),
            on_outbox=relay.notify if relay is not None else None,
        )
        agreements = AgreementService(flows.agreements, registry, config.account_hash_key.reveal().encode())
        schedules = {
            c.channel_id: Schedule.from_steps(
                c.poll.first_delay_s if c.poll.first_delay_s is not None else config.poller.first_delay_s,
                c.poll.schedule or config.poller.schedule,
            )
            for c in config.channels
        }
        with start_up_errors():
            check_preference(config.cashier, frozenset(registry))
        collections = CollectionService(flows, MySQLCollectionStore(db, store), config.cashier)
        poller = Poller(
            MySQLPollQueue(db),
            flows,
            config.poller,
            schedules,
            owner=replica_id,
            scope=replica.scope,
            collections=collections,
        )
        collections.expedite = poller.expedite
        flows.queries = poller  # compensation and failed drives ask for expedited queries
        flows.funders = Funders(config.funders)
        gateway = cls(
            config, db, registry, router, planner, flows, agreements, positions, poller, collections, replica, relay
        )
        gateway._build_plans(clock or SystemClock())
        gateway._build_settlement(clock or SystemClock())
        gateway.retention = Retention(
            config.retention,
            BusinessCalendar(config.business.zone),
            functools.partial(card_usage.prune, db),
            clock=(clock or SystemClock()).now,
        )
        gateway.recon = build_reconciler(
            config, db, registry, gateway.router, relay.notify if relay is not None else None
        )
        gateway.recon_scheduler = ReconScheduler(
            gateway.recon,
            config.reconciliation,
            BusinessCalendar(config.business.zone),
            owner=config.server.replica_id or default_owner(),
        )
        return gateway

    def _build_settlement(self, clock: Clock) -> None:
        """Joint-loan settlement: per funder and business day, paid through the normal payout path."""
        self.settlement = SettlementService(
            store=MySQLSplitStore(self.db),
            payouts=self.flows,
            funders=self.flows.funders,
            calendar=BusinessCalendar(self.config.business.zone),
            config=self.config.settlement,
            now=clock.now,
        )

    def _build_plans(self, clock: Clock) -> None:
        """Withholding plans: the use cases, and the executor withholding through its own FlowService."""
        config = self.config
        calendar = BusinessCalendar(config.business.zone)  # the lender's business day
        store = MySQLPlanStore(self.db)
        schedules = {name: PlanSchedule(policy, calendar) for name, policy in config.plans.policy_objects().items()}
        hash_key = config.account_hash_key.reveal().encode()
        sealer = AccountSealer(hash_key)
        on_outbox = self.relay.notify if self.relay is not None else None
        self.plans = PlanService(
            store=store,
            config=config.plans,
            schedules=schedules,
            sealer=sealer,
            hash_key=hash_key,
            clock=clock,
            on_outbox=on_outbox,
        )
        limiter = RateLimiter(store, config.plans.rate_limits, burst_s=config.plans.burst_s, clock=clock)
        self.plan_flows = FlowService(
            store=self.flows.store,
            agreements=self.flows.agreements,
            registry=paced_registry(self.registry, SendPacer(config.plans.rate_limits, clock)),
            planner=RateAwarePlanner(self.planner, limiter),
            settings=self.flows.settings,
            on_outbox=on_outbox,
        )
        self.plan_flows.queries = self.poller  # a drive that fails after commit 1 still gets its query at once
        self.plan_flows.funders = self.flows.funders
        self.plans.funders = self.flows.funders
        self.executor = PlanExecutor(
            store=store,
            flows=self.plan_flows,
            agreements=self.flows.agreements,
            planner=self.planner,
            limiter=limiter,
            config=config.plans,
            schedules=schedules,
            sealer=sealer,
            clock=clock,
            owner=config.server.replica_id or default_owner(),
            on_outbox=on_outbox,
        )

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        # alert and ratio series exist at zero from the start (see gateway/obs/series.py)
        declare_series(list(self.registry), self.relay.config.topics() if self.relay is not None else ())
        declare_plan_series(
            {name: policy.labels for name, policy in cfg.plans.policy_objects().items()},
            [*cfg.plans.products, "other"],
        )
        if self.recon is not None:
            self.recon.declare_series(time.time())
        self.settlement.declare_series()
        await self.db.start()
        await self.registry.start()
        await self.replica.start(warm_window_s=WARM_WINDOW_S)
        await self._sync_positions()
        if cfg.poller.enabled:
            await self.poller.start()
        await self.agreements.start()  # recovery of agreements left awaiting after a confirm was sent
        if self.relay is not None:
            await self.relay.start()
        if self.recon_scheduler is not None and cfg.reconciliation.enabled:
            await self.recon_scheduler.start()  # after the relay: the result events of flows it settles go out

        grpc_tls, http_tls = await self._load_certificates()
        for warning in plaintext_warnings(
            cfg.server.tls, cfg.server.http_tls, public_callback_base=cfg.server.public_callback_base
        ):
            log.warning(warning)

        callbacks = CallbackHandler(
            self.registry,
            self.flows,
            self.poller.expedite,
            self.collections,
            max_body=cfg.server.http_max_body_bytes,
            timeout_s=cfg.server.http_request_timeout_s,
        )
        self.http_port = await self._serve_http(
            callbacks.app(),
            cfg.server.http_host,
            cfg.server.http_port,
            ssl_context=http_tls.ssl_context() if http_tls is not None else None,
            reuse_port=cfg.server.workers > 1,
        )
        if not cfg.server.public_callback_base:
            # the port actually bound (port 0 picks a free one): channels must be told the real one
            scheme = "https" if http_tls is not None else "http"
            base = f"{scheme}://{cfg.server.http_host}:{self.http_port}"
            self.flows.settings = dataclasses.replace(self.flows.settings, callback_base=base)
            if self.plan_flows is not None:
                self.plan_flows.settings = self.flows.settings
        self.metrics_port = await self._serve_http(
            self._metrics_app(), cfg.server.metrics_host, cfg.server.metrics_port
        )
        if cfg.console.enabled:
            console_tls = await self._load_console_certificate()
            self.console_port = await self._serve_http(
                self._console_app(),
                cfg.console.host,
                cfg.console.port,
                ssl_context=console_tls.ssl_context() if console_tls is not None else None,
            )

        server = grpc.aio.server(
            interceptors=[GatewayInterceptor(Principals(cfg.callers, cfg.operators))],
            # workers on one host share the port (gateway/workers.py); a lone gateway refuses a second binder
            options=[("grpc.max_receive_message_length", 1 << 20), ("grpc.so_reuseport", int(cfg.server.workers > 1))],
        )
        banks = accepted_banks(
            cfg.banks.codes,
            [ch.banks for _, ch in self.registry.items()] + [self.router.profile(c).banks for c in self.registry],
        )
        gateway_pb2_grpc.add_PaymentGatewayServicer_to_server(
            PaymentGatewayServicer(
                self.flows,
                self.agreements,
                cfg.server.default_wait_ms,
                cfg.server.max_wait_ms,
                self.collections,
                banks=banks,
            ),
            server,
        )
        audit = MySQLAuditLog(self.db)
        admin_pb2_grpc.add_GatewayAdminServicer_to_server(
            GatewayAdminServicer(
                registry=self.registry,
                planner=self.planner,
                flows=self.flows,
                positions=self.positions,
                poller=self.poller,
                channel_states=self.replica.channel_states,
                audit=audit,
                discrepancies=MySQLDiscrepancies(self.db),
                resolutions=self.resolutions(),
                operations=self.operations(),
            ),
            server,
        )
        if self.plans is not None:
            self.plans.banks = banks  # plans name the banks a Withhold may
            plans_pb2_grpc.add_WithholdingPlansServicer_to_server(WithholdingPlansServicer(self.plans), server)
            plans_pb2_grpc.add_PlanAdminServicer_to_server(
                PlanAdminServicer(self.plans, MySQLAuditLog(self.db)), server
            )
        splits_pb2_grpc.add_SplitSettlementServicer_to_server(SplitSettlementServicer(self.settlement, audit), server)
        if self.recon is not None:
            recon_pb2_grpc.add_ReconciliationServicer_to_server(ReconciliationServicer(self.recon, audit), server)
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        services = (
            gateway_pb2.DESCRIPTOR.services_by_name["PaymentGateway"].full_name,
            admin_pb2.DESCRIPTOR.services_by_name["GatewayAdmin"].full_name,
            plans_pb2.DESCRIPTOR.services_by_name["WithholdingPlans"].full_name,
            plans_pb2.DESCRIPTOR.services_by_name["PlanAdmin"].full_name,
            splits_pb2.DESCRIPTOR.services_by_name["SplitSettlement"].full_name,
            recon_pb2.DESCRIPTOR.services_by_name["Reconciliation"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(services, server)
        address = f"{cfg.server.grpc_host}:{cfg.server.grpc_port}"
        if grpc_tls is not None:
            self.grpc_port = server.add_secure_port(address, grpc_tls.grpc_credentials())
        else:
            self.grpc_port = server.add_insecure_port(address)
        if self.grpc_port == 0:
            raise ConfigError("server.grpc_port", f"cannot bind {cfg.server.grpc_host}:{cfg.server.grpc_port}")
        await server.start()
        self.grpc_server = server
        for name in ("", *services[:-2]):  # every service of ours (not Health and reflection)
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.executor is not None and cfg.plans.enabled:
            await self.executor.start()  # after the servers: its withholds' callbacks must have somewhere to go
        if cfg.settlement.enabled:
            self.settlement.start()  # after the servers: its payouts' callbacks must have somewhere to go
        self.retention.start()
        self._sampler = asyncio.create_task(self._sample_metrics(), name="metrics-sampler")
        if self.certificates:
            self._tls_reload = asyncio.create_task(self._reload_certificates(), name="tls-reload")
        log.info(
            "paygate serving",
            extra={
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "metrics_port": self.metrics_port,
                "grpc_tls": "mutual" if cfg.server.tls.mutual else "tls" if cfg.server.tls.enabled else "plaintext",
            },
        )

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.server.grace_s
        started = time.monotonic()
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace)
        left = max(grace - (time.monotonic() - started), 0.0)
        if self.executor is not None:
            await self.executor.stop(left)  # no new plan withholds; what it cut short comes back by lease
        await self.settlement.stop()  # no new settlement payouts; a payout in flight finishes in the drain
        left = max(grace - (time.monotonic() - started), 0.0)
        cancelled = await self.flows.drain(left)
        if self.plan_flows is not None:
            cancelled += await self.plan_flows.drain(max(grace - (time.monotonic() - started), 0.0))
        if cancelled:
            log.warning("%d channel calls cancelled at shutdown; they are queried at next start", cancelled)
        await self.agreements.stop(max(grace - (time.monotonic() - started), 0.0))
        await self.retention.stop()
        for task in (self._sampler, self._tls_reload):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.recon_scheduler is not None:
            await self.recon_scheduler.stop()  # before the relay: a run cut short is taken over after its lease
        await self.poller.stop()
        if self.relay is not None:
            await self.relay.stop()
        await self.replica.stop()
        for runner in self.runners:
            await runner.cleanup()
        await self.registry.stop()
        await self.db.stop()
        log.info("paygate stopped")

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- helpers ---------------------------------------------------------------------

    async def _load_certificates(self) -> tuple[CertificateWatcher | None, CertificateWatcher | None]:
        """The gRPC and callback listeners' certificates, checked (ConfigError naming the file if not)."""
        found: list[CertificateWatcher | None] = []
        for table, key, listener in (
            (self.config.server.tls, "server.tls", "grpc"),
            (self.config.server.http_tls, "server.http_tls", "http"),
        ):
            watcher = None
            if table.enabled:
                with start_up_errors():
                    watcher = await asyncio.to_thread(CertificateWatcher, table, key, listener)
                self.certificates.append(watcher)
            found.append(watcher)
        return found[0], found[1]

    async def _load_console_certificate(self) -> CertificateWatcher | None:
        """The console listener's certificate ([console.tls]), checked; None serves plain HTTP."""
        table = self.config.console.tls
        if not table.enabled:
            return None
        with start_up_errors():
            watcher = await asyncio.to_thread(CertificateWatcher, table, key="console.tls", listener="console")
        self.certificates.append(watcher)
        return watcher

    async def _reload_certificates(self) -> None:
        """Look at the certificate files every ``reload_check_s`` (the shortest configured) and re-read changes."""
        interval = min(w.config.reload_check_s for w in self.certificates)
        while True:
            await asyncio.sleep(interval)
            for watcher in self.certificates:
                try:
                    await asyncio.to_thread(watcher.refresh)
                except Exception:  # never let a reload problem end the loop; the old certificates stay
                    log.warning("TLS reload check failed for %s", watcher.listener, exc_info=True)

    async def _serve_http(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> int:
        idle_s = self.config.server.http_request_timeout_s  # also cuts off headers that never end (aiohttp: 1 h)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=idle_s)
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port or None)
        await site.start()
        self.runners.append(runner)
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    def resolutions(self) -> ManualResolutions:
        """Manual resolutions with maker-checker, as the admin API and the console both apply them."""
        return ManualResolutions(
            self.flows.store,
            MySQLResolutions(self.db),
            approval_above=self.config.security.resolve_approval_above,
            on_resolved=self.flows.on_outbox,
        )

    def operations(self) -> Operations:
        """The operators' use cases over this gateway's stores (the console's; the admin API's to come)."""
        return Operations(
            registry=self.registry,
            planner=self.planner,
            flows=self.flows.store,
            positions=self.positions,
            poller=self.poller,
            channel_states=MySQLChannelStates(self.db),
            audit=MySQLAuditLog(self.db),
            resolutions=self.resolutions(),
            outbox=MySQLOutboxAdmin(self.db),
            outbox_max_attempts=self.config.kafka.max_attempts if self.config.kafka is not None else 10,
            on_outbox=self.flows.on_outbox,
        )

    def _console_app(self) -> web.Application:
        from gateway.console.operators import directory_from_config
        from gateway.console.plans import PlansDeps
        from gateway.console.server import ConsoleDeps, build_app
        from gateway.plans.operations import PlanOperations
        from gateway.store.console_plans import MySQLPlanConsoleQueries

        cfg = self.config
        reads = MySQLPlanConsoleQueries(self.db, timeout_s=cfg.console.query_timeout_s)
        plans = PlansDeps(reads, PlanOperations(self.plans, MySQLAuditLog(self.db))) if self.plans else None
        with start_up_errors():
            return build_app(
                ConsoleDeps(
                    config=cfg.console,
                    reads=reads,
                    flows=self.flows.store,
                    operations=self.operations(),
                    operators=directory_from_config(cfg.operators, token_sign_in=cfg.console.token_sign_in),
                    calendar=BusinessCalendar(cfg.business.zone),
                    registry=self.registry,
                    planner=self.planner,
                    positions=self.positions,
                    audit=MySQLAuditLog(self.db),
                    outbox_max_attempts=cfg.kafka.max_attempts if cfg.kafka is not None else 10,
                    relay_enabled=self.relay is not None,
                    settlement=self.settlement,
                    plans=plans,
                    recon=self.recon,
                )
            )

    def _metrics_app(self) -> web.Application:
        async def serve(request: web.Request) -> web.Response:
            body = generate_latest(metrics.REGISTRY)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", serve)
        return app

    async def _sync_positions(self) -> None:
        """Channels that pay out but have no position row yet get one from their balance query."""
        await PositionService(self.positions, self.registry).sync_missing()

    async def sample_metrics_once(self) -> None:
        await self.poller.sample_metrics()
        if self.relay is not None:
            await self.relay.sample_metrics()
        for row in await self.positions.all():
            metrics.POSITION_AVAILABLE.labels(channel=row.channel, currency=row.currency).set(row.available)
            metrics.POSITION_RESERVED.labels(channel=row.channel, currency=row.currency).set(row.reserved)
        self.planner.publish_metrics()
        await self.replica.sample_metrics()
        if self.executor is not None and self.config.plans.enabled:
            await self.executor.sample_metrics()
        if self.recon is not None:
            await self.recon.sample_metrics()
        await self.settlement.sample_metrics()

    async def _sample_metrics(self) -> None:
        while True:
            try:
                await self.sample_metrics_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("metrics sampling failed", exc_info=True)
            await asyncio.sleep(2.0)


# The cyclic collector's first generation runs after this many allocations net of frees (CPython's
# default: 700). A withhold allocates thousands of short-lived objects that reference counting frees
# anyway; at 700 the collector ran dozens of times a second under load, and promoted live request
# objects towards the full collections that walk the whole heap (tens of ms each, the loop stalled).
GC_THRESHOLDS = (20_000, 20, 20)


def settle_heap() -> None:
    """After start-up: everything built so far (modules, config, pools, servers) leaves the collector's view.

    ``gc.freeze()`` moves the objects alive now to a permanent generation that
    no collection walks (they live until exit anyway), and the thresholds above
    make collections rarer; garbage with reference cycles is still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(config: Config) -> int:
    """Run until SIGTERM/SIGINT, then shut down in order."""
    gateway = Gateway.build(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    settle_heap()
    try:
        await stop.wait()
    finally:
        await gateway.stop()
    return 0
