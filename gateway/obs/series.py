"""Create the alerting-relevant metric series at zero when the gateway starts.

A labelled counter has no series until its first ``inc()``. Prometheus'
``increase()``/``rate()`` need two samples, so the *first* discrepancy, bad
signature or unmapped code or credentials refusal after a restart would arrive as a new series at
value 1 and never show as an increase: the alert would stay silent exactly
once per process and label set. Declaring the children at zero up front
closes that gap, and it gives every configured channel a success ratio
(and dashboard rows) before its first call.

Call :func:`declare_channel_series` once from the composition root with the
configured channel ids.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway import metrics

__all__ = ["CHANNEL_OPERATIONS", "declare_channel_series"]

CHANNEL_OPERATIONS = ("withhold", "payout", "refund", "query")
_OUTCOMES = ("succeeded", "payer_failure", "channel_failure", "pending", "error")
_CALLBACK_RESULTS = ("verified", "bad_signature", "unknown_order", "replay", "mismatch", "malformed")
_POLL_RESULTS = ("resolved", "pending", "error", "exhausted")
_DISCREPANCY_SOURCES = ("response", "poll", "callback", "recovery")  # gateway.store.flows.Source


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
        for result in _CALLBACK_RESULTS:
            metrics.CALLBACKS.labels(channel=channel, result=result)
        for result in _POLL_RESULTS:
            metrics.POLLS.labels(channel=channel, result=result)
        for source in sources:
            metrics.DISCREPANCIES.labels(channel=channel, source=source)
        metrics.CHANNEL_UNMAPPED_CODES.labels(channel=channel)
        metrics.CHANNEL_CREDENTIALS_REJECTED.labels(channel=channel)
        metrics.POLL_EXHAUSTED.labels(channel=channel)
