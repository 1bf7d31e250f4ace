"""Create the metric series that alerts and dashboard panels read, at zero, when the gateway starts.

A labelled counter has no series until its first ``inc()``. Prometheus'
``increase()``/``rate()`` need two samples, so the *first* discrepancy, bad
signature or unmapped code or credentials refusal after a restart would arrive as a new series at
value 1 and never show as an increase: the alert would stay silent exactly
once per process and label set. Panels would show "No data" instead of 0.
Declaring the children at zero up front closes that gap, and it gives every
configured channel a success ratio (and dashboard rows) before its first call.

Call :func:`declare_series` once from the composition root with the
configured channel ids and outbox topics. ``tests/unit/deploy/test_series.py``
checks that every counter a rule or panel in ``deploy/`` reads has a series
on a fresh ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway import metrics
from paygate.v1 import admin_pb2, gateway_pb2, plans_pb2

__all__ = ["CHANNEL_OPERATIONS", "declare_channel_series", "declare_plan_series", "declare_series"]

CHANNEL_OPERATIONS = ("withhold", "payout", "refund", "query", "close")
_OUTCOMES = ("succeeded", "payer_failure", "channel_failure", "pending", "error")
_CALLBACK_RESULTS = ("verified", "bad_signature", "unknown_order", "replay", "mismatch", "malformed", "timeout")
_POLL_RESULTS = ("resolved", "pending", "error", "exhausted")
_DISCREPANCY_SOURCES = ("response", "poll", "callback", "recovery")  # gateway.store.flows.Source
# gateway.planner; rate_limit: a plan withhold sent to the best channel with a token (gateway/plans/routing.py)
_DECISION_REASONS = ("best_score", "exploration", "probe", "failover", "explicit", "rate_limit")
# routing/engine.py's filters (Rejection.filter)
_ROUTING_FILTERS = (
    "eliminated",
    "excluded",
    "state",
    "operation",
    "currency",
    "bank",
    "amount",
    "bank_amount",
    "agreement",
    "position",
    "card_attempts",
    "card_amount",
    "maintenance",
)
# The failover reason every channel can give: a connection refused before anything was sent
# (channels/http.py); the others depend on each channel's error table.
_FAILOVER_REASONS = ("connection_failed",)
_FLOW_KINDS = ("WITHHOLD", "PAYOUT", "REFUND")
_FLOW_RESULTS = ("SUCCEEDED", "FAILED")
# Every status the interceptor answers or sees (gateway/api/auth.py, gateway/api/status.py).
_GRPC_CODES = (
    "OK",
    "INVALID_ARGUMENT",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "FAILED_PRECONDITION",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
    "UNAVAILABLE",
    "INTERNAL",
    "DEADLINE_EXCEEDED",
    "CANCELLED",
)
# gateway.plans.model.OutcomeKind, lower case
_PLAN_OUTCOMES = ("succeeded", "retry_scheduled", "stopped", "settled", "cancelled")
# gateway/replicas.py's follow-the-others steps
_REPLICA_SYNC_STEPS = ("heartbeat", "channel_states", "evidence")
# What a broker outage looks like to the relay (aiokafka's error classes).
_PUBLISH_ERRORS = ("KafkaConnectionError", "KafkaTimeoutError")


def grpc_methods() -> tuple[str, ...]:
    """The short names of every method of the gateway's services (the ``method`` label)."""
    services = (
        gateway_pb2.DESCRIPTOR.services_by_name["PaymentGateway"],
        admin_pb2.DESCRIPTOR.services_by_name["GatewayAdmin"],
        plans_pb2.DESCRIPTOR.services_by_name["WithholdingPlans"],
        plans_pb2.DESCRIPTOR.services_by_name["PlanAdmin"],
    )
    return tuple(method.name for service in services for method in service.methods)


def declare_series(channel_ids: Iterable[str], topics: Iterable[str] = ()) -> None:
    """Create, at zero, every counter series an alert or a panel reads. Idempotent; values are kept."""
    channel_ids = tuple(channel_ids)
    declare_channel_series(channel_ids)
    for operation in CHANNEL_OPERATIONS:
        metrics.ROUTING_NO_CANDIDATE.labels(operation=operation)
    for kind in _FLOW_KINDS:
        metrics.FLOWS_CREATED.labels(kind=kind)
        metrics.FLOWS_REPLAYED.labels(kind=kind)
        for status in _FLOW_RESULTS:
            metrics.FLOWS_FINISHED.labels(kind=kind, status=status)
    for method in grpc_methods():
        for code in _GRPC_CODES:
            metrics.GRPC_REQUESTS.labels(method=method, code=code)
    for topic in topics:
        metrics.OUTBOX_PUBLISHED.labels(topic=topic)
    for error in _PUBLISH_ERRORS:
        metrics.OUTBOX_PUBLISH_ERRORS.labels(error=error)
    for what in _REPLICA_SYNC_STEPS:
        metrics.REPLICA_SYNC_ERRORS.labels(what=what)


def declare_plan_series(time_points: Mapping[str, Iterable[str]], products: Iterable[str]) -> None:
    """Zero-valued plan series: runs behind per policy and time point, attempts and outcomes per product.

    ``time_points`` maps each policy to its HH:MM time points; ``products`` are the metrics labels
    of the configured products (and ``other``).
    """
    points = {point for policy_points in time_points.values() for point in policy_points}
    for policy, policy_points in time_points.items():
        for point in policy_points:
            metrics.PLAN_RUNS_BEHIND.labels(policy=policy, time_point=point)
    if not points:  # no policy configured: one series at "-", so the counter exists as the rules expect
        metrics.PLAN_RUNS_BEHIND.labels(policy="-", time_point="-")
    for product in products:
        for point in points:
            metrics.PLAN_ATTEMPTS.labels(product=product, time_point=point)
            metrics.PLAN_SUCCEEDED.labels(product=product, time_point=point)
        for outcome in _PLAN_OUTCOMES:
            metrics.PLAN_OUTCOMES.labels(product=product, outcome=outcome)


def declare_channel_series(
    channel_ids: Iterable[str],
    operations: Iterable[str] = CHANNEL_OPERATIONS,
    discrepancy_sources: Iterable[str] = _DISCREPANCY_SOURCES,
) -> None:
    """Create zero-valued series per channel for the metrics alerts and the success ratio read.

    Idempotent; existing values are not touched. ``operations`` should be the
    operations the channels actually serve (an operation never called shows
    as an empty ratio, which is harmless but clutters the dashboard).
    """
    operations = tuple(operations)
    sources = tuple(discrepancy_sources)
    for channel in channel_ids:
        for operation in operations:
            for outcome in _OUTCOMES:
                metrics.CHANNEL_REQUESTS.labels(channel=channel, operation=operation, outcome=outcome)
            for reason in _DECISION_REASONS:
                metrics.ROUTING_DECISIONS.labels(channel=channel, operation=operation, reason=reason)
        for result in _CALLBACK_RESULTS:
            metrics.CALLBACKS.labels(channel=channel, result=result)
        for result in _POLL_RESULTS:
            metrics.POLLS.labels(channel=channel, result=result)
        for source in sources:
            metrics.DISCREPANCIES.labels(channel=channel, source=source)
        for name in _ROUTING_FILTERS:
            metrics.ROUTING_REJECTIONS.labels(channel=channel, filter=name)
        for reason in _FAILOVER_REASONS:
            metrics.FAILOVERS.labels(from_channel=channel, reason=reason)
        metrics.CHANNEL_UNMAPPED_CODES.labels(channel=channel)
        metrics.CHANNEL_CREDENTIALS_REJECTED.labels(channel=channel)
        metrics.POLL_EXHAUSTED.labels(channel=channel)
        metrics.POSITION_BELOW_ZERO.labels(channel=channel)
