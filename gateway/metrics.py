"""Every Prometheus metric paygate exports, in one registry.

Naming follows Prometheus conventions (``_total`` counters, ``_seconds``
durations, base units). Labels are low-cardinality only: channel ids,
operations, outcomes, methods, codes. Never order numbers, flow numbers,
card or account numbers.

Label values used across the code base:

* ``operation``: withhold, payout, refund, query, close, agreement, balance
* ``outcome`` (channel requests): succeeded, payer_failure, channel_failure,
  pending, error
* ``result`` (callbacks): verified, bad_signature, unknown_order, replay,
  mismatch, malformed, timeout
* ``state`` (channel state): enabled, draining, disabled, eliminated, probing
* ``what`` (replica sync): heartbeat, channel_states, evidence
* ``listener`` (TLS): grpc, http; ``cert``: server, client_ca
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

# The process itself (process_resident_memory_bytes, process_open_fds, CPU seconds, ...), the
# interpreter (python_info) and the garbage collector (python_gc_*): what the memory-growth
# alerts read (deploy/prometheus/rules/paygate.rules.yml). The default registry has them; ours
# is separate (tests and tools build their own gateways), so they are registered here.
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# --- channels ------------------------------------------------------------------
CHANNEL_REQUESTS = Counter(
    "paygate_channel_requests_total",
    "Calls to channels by outcome (payer_failure does not count against the channel).",
    ["channel", "operation", "outcome"],
    registry=REGISTRY,
)
CHANNEL_LATENCY = Histogram(
    "paygate_channel_request_duration_seconds",
    "Channel call latency, including timeouts.",
    ["channel", "operation"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CHANNEL_UNMAPPED_CODES = Counter(
    "paygate_channel_unmapped_codes_total",
    "Channel answers whose raw code was not in the channel's error table (treated as PENDING).",
    ["channel"],
    registry=REGISTRY,
)

CHANNEL_CREDENTIALS_REJECTED = Counter(
    "paygate_channel_credentials_rejected_total",
    "Channel answers refusing paygate's credentials (signature, key, app or merchant id); the channel is held"
    " out of routing until a call is accepted again or an operator sets its state.",
    ["channel"],
    registry=REGISTRY,
)

# --- routing ---------------------------------------------------------------------
ROUTER_SUCCESS_ESTIMATE = Gauge(
    "paygate_router_success_estimate_ratio",
    "The router's live success-rate estimate per channel and operation (0..1).",
    ["channel", "operation"],
    registry=REGISTRY,
)
CHANNEL_STATE = Gauge(
    "paygate_channel_state",
    "1 for the channel's current state (enabled, draining, disabled, eliminated, probing), else 0.",
    ["channel", "state"],
    registry=REGISTRY,
)
ROUTING_DECISIONS = Counter(
    "paygate_routing_decisions_total",
    "Channels chosen by the router, with the reason (best_score, exploration, probe, failover, explicit).",
    ["channel", "operation", "reason"],
    registry=REGISTRY,
)
ROUTING_REJECTIONS = Counter(
    "paygate_routing_rejections_total",
    "Candidates removed by a routing filter.",
    ["channel", "filter"],
    registry=REGISTRY,
)
ROUTING_NO_CANDIDATE = Counter(
    "paygate_routing_no_candidate_total",
    "Requests for which no channel passed the filters.",
    ["operation"],
    registry=REGISTRY,
)
FAILOVERS = Counter(
    "paygate_failovers_total",
    "Attempts moved to another channel after a definite, safe-elsewhere failure.",
    ["from_channel", "reason"],
    registry=REGISTRY,
)
POSITION_AVAILABLE = Gauge(
    "paygate_position_available_minor_units",
    "Channel float available for payouts (balance - reserved), minor units.",
    ["channel", "currency"],
    registry=REGISTRY,
)
POSITION_RESERVED = Gauge(
    "paygate_position_reserved_minor_units",
    "Channel float reserved by payouts in flight, minor units.",
    ["channel", "currency"],
    registry=REGISTRY,
)
POSITION_BELOW_ZERO = Counter(
    "paygate_position_below_zero_total",
    "Payout settlements that took a channel's recorded float below zero (an audit record names the attempt).",
    ["channel"],
    registry=REGISTRY,
)

# --- joint-loan settlement (gateway/splits/settlement.py) ----------------------------
SETTLEMENTS_UNFINISHED = Gauge(
    "paygate_settlements_unfinished",
    "Funder settlements whose payout has not paid (status: PAYING, PAYOUT_FAILED), from the database.",
    ["status"],
    registry=REGISTRY,
)
SETTLEMENT_OLDEST_AGE = Gauge(
    "paygate_settlement_oldest_age_seconds",
    "Seconds since the oldest settlement of each status (PAYING, PAYOUT_FAILED) last changed; 0 when there is none.",
    ["status"],
    registry=REGISTRY,
)

# --- retention (gateway/retention.py) ------------------------------------------------
RETENTION_DELETED = Counter(
    "paygate_retention_deleted_total",
    "Rows deleted by the retention job because their business day is past the retention (table: card_usage).",
    ["table"],
    registry=REGISTRY,
)
RETENTION_ERRORS = Counter(
    "paygate_retention_errors_total",
    "Retention runs that failed (table: card_usage); the next interval tries again.",
    ["table"],
    registry=REGISTRY,
)

# --- replicas (gateway/replicas.py) --------------------------------------------------
REPLICAS_ALIVE = Gauge(
    "paygate_replicas_alive",
    "Gateway runs with a fresh heartbeat in the replicas table, as this replica sees them.",
    registry=REGISTRY,
)
REPLICA_SYNC_AGE = Gauge(
    "paygate_replica_sync_age_seconds",
    "Seconds since this replica last completed each follow-the-others step"
    " (what: heartbeat, channel_states, evidence).",
    ["what"],
    registry=REGISTRY,
)
REPLICA_SYNC_ERRORS = Counter(
    "paygate_replica_sync_errors_total",
    "Failed follow-the-others steps (what: heartbeat, channel_states, evidence); the next tick retries.",
    ["what"],
    registry=REGISTRY,
)
ROUTING_EVIDENCE_FOLDED = Counter(
    "paygate_routing_evidence_folded_total",
    "Attempt outcomes recorded by other replicas that this replica's router counted.",
    registry=REGISTRY,
)

# --- flows -------------------------------------------------------------------------
FLOWS_CREATED = Counter(
    "paygate_flows_created_total",
    "Flows created (idempotent replays not counted).",
    ["kind"],
    registry=REGISTRY,
)
FLOWS_FINISHED = Counter(
    "paygate_flows_finished_total",
    "Flows reaching a terminal status.",
    ["kind", "status"],
    registry=REGISTRY,
)
FLOWS_REPLAYED = Counter(
    "paygate_flows_replayed_total",
    "Requests answered from an existing flow (same idempotency key and parameters).",
    ["kind"],
    registry=REGISTRY,
)
FLOW_DRIVE_ERRORS = Counter(
    "paygate_flow_drive_errors_total",
    "Recorded flows whose drive raised (e.g. the database went away before the outcome was written);"
    " the caller got the flow as recorded and its open attempts were queued for a query.",
    ["kind"],
    registry=REGISTRY,
)
COMPENSATION_QUERIES = Counter(
    "paygate_compensation_queries_total",
    "Retries of a stuck PROCESSING flow (补单) that asked for an expedited query: queued, or rate_limited.",
    ["channel", "result"],
    registry=REGISTRY,
)
AGREEMENTS_TO_REVIEW = Counter(
    "paygate_agreements_marked_review_total",
    "Agreements left awaiting confirmation after a confirm was sent, marked for an operator by recovery.",
    ["channel"],
    registry=REGISTRY,
)

# --- gRPC --------------------------------------------------------------------------
GRPC_REQUESTS = Counter(
    "paygate_grpc_server_requests_total",
    "gRPC requests by method and status code.",
    ["method", "code"],
    registry=REGISTRY,
)
GRPC_LATENCY = Histogram(
    "paygate_grpc_server_request_duration_seconds",
    "gRPC request latency by method.",
    ["method"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)

# --- unconfirmed results -------------------------------------------------------------
PENDING_ATTEMPTS = Gauge(
    "paygate_pending_attempts",
    "Attempts without a definite outcome (SENDING or PENDING).",
    registry=REGISTRY,
)
OLDEST_PENDING_AGE = Gauge(
    "paygate_oldest_pending_attempt_age_seconds",
    "Age of the oldest attempt without a definite outcome.",
    registry=REGISTRY,
)
POLLS = Counter(
    "paygate_polls_total",
    "Channel queries made by the poller, by result (resolved, pending, error, exhausted, review).",
    ["channel", "result"],
    registry=REGISTRY,
)
POLL_QUEUE_DUE = Gauge(
    "paygate_poll_queue_due",
    "Poll queue rows whose due time has passed.",
    registry=REGISTRY,
)
NEEDS_REVIEW = Gauge(
    "paygate_needs_review_flows",
    "Flows left PROCESSING with needs_review, waiting for an operator.",
    registry=REGISTRY,
)
POLL_EXHAUSTED = Counter(
    "paygate_poll_exhausted_total",
    "Attempts whose poll schedule ran out (flow marked needs_review, never auto-failed).",
    ["channel"],
    registry=REGISTRY,
)
CALLBACKS = Counter(
    "paygate_callbacks_total",
    "Channel callbacks by result.",
    ["channel", "result"],
    registry=REGISTRY,
)
DISCREPANCIES = Counter(
    "paygate_discrepancies_total",
    "Late channel results conflicting with a recorded terminal result.",
    ["channel", "source"],
    registry=REGISTRY,
)

# --- outbox --------------------------------------------------------------------------
OUTBOX_BACKLOG = Gauge(
    "paygate_outbox_backlog",
    "Outbox events not yet acknowledged by Kafka.",
    registry=REGISTRY,
)
OUTBOX_OLDEST_AGE = Gauge(
    "paygate_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest outbox event not yet acknowledged by Kafka.",
    registry=REGISTRY,
)
OUTBOX_PUBLISHED = Counter(
    "paygate_outbox_published_total",
    "Outbox events acknowledged by Kafka.",
    ["topic"],
    registry=REGISTRY,
)
OUTBOX_PUBLISH_ERRORS = Counter(
    "paygate_outbox_publish_errors_total",
    "Failed attempts to publish outbox events, by error class.",
    ["error"],
    registry=REGISTRY,
)

# --- store ---------------------------------------------------------------------------
DB_COMMITS = Counter(
    "paygate_db_commits_total",
    "Transactions this process committed (a group commit shared by many requests counts once).",
    registry=REGISTRY,
)
DB_CONFLICT_RETRIES = Counter(
    "paygate_db_conflict_retries_total",
    "Units of work rolled back by a deadlock or lock wait timeout and tried again.",
    registry=REGISTRY,
)
STORE_STALE_KNOWN = Counter(
    "paygate_store_stale_known_rows_total",
    "Transition batches whose requests' own rows had changed since they were recorded (a poller, a callback,"
    " an operator wrote first): rolled back and done again under row locks.",
    registry=REGISTRY,
)
STORE_BATCH_SIZE = Histogram(
    "paygate_store_batch_size",
    "Writes of concurrent requests sharing one commit (application group commit), by operation.",
    ["operation"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)

# --- withholding plans (gateway/plans) ----------------------------------------------------
# ``product`` is a product configured in [plans.products] (any other: "other"); ``time_point``
# is HH:MM; ``reason`` a normalized failure code. Gauges are read from the database and are the
# same on every replica: aggregate them with max(), counters with sum().
PLAN_DUE = Gauge(
    "paygate_plan_due_instalments",
    "Instalments due when a time point's run started.",
    ["product", "time_point"],
    registry=REGISTRY,
)
PLAN_REMAINING = Gauge(
    "paygate_plan_remaining_instalments",
    "Instalments of an open run still due and not attempted.",
    ["product", "time_point"],
    registry=REGISTRY,
)
PLAN_RUN_LAG = Gauge(
    "paygate_plan_run_lag_seconds",
    "How far past its window an open run will finish at its pace so far (0: on time).",
    ["product", "time_point"],
    registry=REGISTRY,
)
PLAN_ATTEMPTS = Counter(
    "paygate_plan_attempts_total",
    "Plan withholds started (one per instalment per time point at most).",
    ["product", "time_point"],
    registry=REGISTRY,
)
PLAN_SUCCEEDED = Counter(
    "paygate_plan_succeeded_total",
    "Instalments collected by a plan withhold.",
    ["product", "time_point"],
    registry=REGISTRY,
)
PLAN_SUCCEEDED_AMOUNT = Counter(
    "paygate_plan_succeeded_minor_units_total",
    "Amount collected by plan withholds, minor units.",
    ["product", "time_point", "currency"],
    registry=REGISTRY,
)
PLAN_FAILED = Counter(
    "paygate_plan_failed_total",
    "Plan withholds that failed, by failure code (retried or stopped as the policy says).",
    ["product", "time_point", "reason"],
    registry=REGISTRY,
)
PLAN_OUTCOMES = Counter(
    "paygate_plan_instalment_outcomes_total",
    "Instalment outcome events: succeeded, retry_scheduled, stopped, settled, cancelled.",
    ["product", "outcome"],
    registry=REGISTRY,
)
PLAN_RUNS_BEHIND = Counter(
    "paygate_plan_runs_behind_total",
    "Time point runs whose window closed with due instalments left unattempted (due at the next time point).",
    ["policy", "time_point"],
    registry=REGISTRY,
)

# --- TLS ------------------------------------------------------------------------------


class CertificateExpiry(Collector):
    """``paygate_tls_certificate_expires_in_seconds{listener, cert}``: seconds until a loaded certificate's
    ``notAfter``, computed at each scrape (so it falls by itself between reloads; negative once expired).

    ``cert`` is ``server`` (the listener's own certificate) or ``client_ca`` (the earliest-expiring CA
    certificate client certificates must chain to). Set by gateway/security/tls.py at every (re)load.
    """

    name = "paygate_tls_certificate_expires_in_seconds"
    documentation = "Seconds until a certificate the gateway serves or trusts expires (negative: expired)."

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._not_after: dict[tuple[str, str], float] = {}

    def set(self, listener: str, cert: str, not_after: float) -> None:
        """``not_after``: the certificate's notAfter as a Unix timestamp."""
        with self._lock:
            self._not_after[(listener, cert)] = not_after

    def forget(self, listener: str, cert: str) -> None:
        with self._lock:
            self._not_after.pop((listener, cert), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=["listener", "cert"])
        now = self._clock()
        with self._lock:
            for (listener, cert), not_after in sorted(self._not_after.items()):
                family.add_metric([listener, cert], not_after - now)
        yield family

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.name, self.documentation, labels=["listener", "cert"])


TLS_CERTIFICATE_EXPIRY = CertificateExpiry()
REGISTRY.register(TLS_CERTIFICATE_EXPIRY)
TLS_RELOADS = Counter(
    "paygate_tls_reloads_total",
    "Certificate files re-read because they changed, by listener and result (loaded, rejected: the old ones stay).",
    ["listener", "result"],
    registry=REGISTRY,
)

# --- reconciliation (gateway/recon, docs/RECONCILIATION.md) -----------------------------------------

RECON_DISCREPANCIES = Counter(
    "paygate_recon_discrepancies_total",
    "Discrepancies found by reconciliation runs, by channel and class (channel_only and local_only are critical).",
    ["channel", "class"],
    registry=REGISTRY,
)
RECON_RUNS = Counter(
    "paygate_recon_runs_total",
    "Reconciliation runs by channel and result (consistent, inconsistent, failed).",
    ["channel", "result"],
    registry=REGISTRY,
)
RECON_LAST_SUCCESS = Gauge(
    "paygate_recon_last_success_timestamp_seconds",
    "When the last successful reconciliation run of the channel finished (epoch seconds; read from the database).",
    ["channel"],
    registry=REGISTRY,
)


M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """A labelled metric's children, each bound once: ``labels()`` checks, joins and locks on every call.

    ``CHANNEL_REQUEST_CHILDREN(channel, operation, outcome)`` is
    ``CHANNEL_REQUESTS.labels(channel, operation, outcome)``, from a dict
    after the first call. Label values here come from small fixed sets
    (channels, operations, codes), as the metric's own children do.
    """

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


CHANNEL_REQUEST_CHILDREN = Children(CHANNEL_REQUESTS)
CHANNEL_LATENCY_CHILDREN = Children(CHANNEL_LATENCY)
ROUTING_DECISION_CHILDREN = Children(ROUTING_DECISIONS)
GRPC_REQUEST_CHILDREN = Children(GRPC_REQUESTS)
GRPC_LATENCY_CHILDREN = Children(GRPC_LATENCY)
