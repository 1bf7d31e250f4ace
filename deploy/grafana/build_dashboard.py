"""Generate deploy/grafana/dashboards/paygate.json (the paygate Grafana dashboard).

The JSON is committed; edit this file and regenerate:

    .venv/bin/python deploy/grafana/build_dashboard.py

tests/unit/deploy/test_dashboard.py fails when the committed JSON and this
generator disagree.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "paygate.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
CH = 'channel=~"$channel"'
OP = 'operation=~"$operation"'
RATE = "$__rate_interval"


@dataclass
class Query:
    expr: str
    legend: str = ""


@dataclass
class Panel:
    title: str
    queries: list[Query]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    height: int = 8
    description: str = ""
    min: float | None = None
    max: float | None = None
    stack: bool = False
    thresholds: list[tuple[str, float | None]] = field(default_factory=list)
    text_mode: str = "auto"


def q(expr: str, legend: str = "") -> Query:
    return Query(" ".join(expr.split()), legend)


def _legend(by: str) -> str:
    return " ".join("{{" + label.strip() + "}}" for label in by.split(","))


def summed(metric: str, by: str, selector: str = "", fn: str = "rate", legend: str = "") -> Query:
    """``sum by (<by>) (<fn>(<metric>{<selector>}[$__rate_interval]))`` with a legend naming the labels."""
    matchers = f"{{{selector}}}" if selector else ""
    return q(f"sum by ({by}) ({fn}({metric}{matchers}[{RATE}]))", legend or _legend(by))


def quantiles(histogram: str, by: str, selector: str = "") -> list[Query]:
    """p99 and p50 of a histogram, per ``by`` labels."""
    matchers = f"{{{selector}}}" if selector else ""
    return [
        q(
            f"histogram_quantile({quantile}, sum by (le, {by}) (rate({histogram}_bucket{matchers}[{RATE}])))",
            f"p{round(quantile * 100)} {_legend(by)}",
        )
        for quantile in (0.99, 0.5)
    ]


CH_OP = f"{CH},{OP}"
SUCCESS_THRESHOLDS: list[tuple[str, float | None]] = [("red", None), ("orange", 0.8), ("green", 0.95)]
SUCCESS_RATIO = q(f"paygate:channel_success_ratio:rate5m{{{CH_OP}}}", "{{channel}} {{operation}}")

ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Channels",
        [
            Panel(
                "Channel success rate (5m, payer failures excluded)",
                [SUCCESS_RATIO],
                unit="percentunit",
                width=12,
                min=0,
                max=1,
                description=(
                    "Recording rule paygate:channel_success_ratio:rate5m = succeeded / "
                    "(succeeded + channel_failure + error). Payer failures and pending answers are excluded. "
                    "Alerts: below 95% for 10m (warning), below 80% for 5m (critical)."
                ),
                thresholds=SUCCESS_THRESHOLDS,
            ),
            Panel(
                "Success rate now",
                [SUCCESS_RATIO],
                kind="stat",
                unit="percentunit",
                width=6,
                min=0,
                max=1,
                thresholds=SUCCESS_THRESHOLDS,
            ),
            Panel(
                "Channel state",
                [q(f"paygate_channel_state{{{CH}}} == 1", "{{channel}}: {{state}}")],
                kind="stat",
                unit="none",
                width=6,
                text_mode="name",
                description="Manual state (enabled, draining, disabled) or router state (eliminated, probing).",
            ),
            Panel(
                "Channel calls by outcome",
                [summed("paygate_channel_requests_total", "channel, outcome", CH_OP)],
                unit="reqps",
                stack=True,
            ),
            Panel(
                "Channel volume by operation",
                [summed("paygate_channel_requests_total", "channel, operation", CH_OP)],
                unit="reqps",
            ),
            Panel(
                "Unconfirmed (pending) share",
                [q(f"paygate:channel_pending_ratio:rate5m{{{CH_OP}}}", "{{channel}} {{operation}}")],
                unit="percentunit",
                min=0,
                max=1,
                description=(
                    "Calls ending PENDING (timeouts after sending, processing, unmapped codes) / all non-payer outcomes"
                ),
            ),
            Panel(
                "Channel latency p99 / p50",
                quantiles("paygate_channel_request_duration_seconds", "channel, operation", CH_OP),
                unit="s",
                width=12,
            ),
            Panel(
                "Router success estimate",
                [q(f"paygate_router_success_estimate_ratio{{{CH_OP}}}", "{{channel}} {{operation}}")],
                unit="percentunit",
                width=6,
                min=0,
                max=1,
            ),
            Panel(
                "Unmapped channel codes",
                [summed("paygate_channel_unmapped_codes_total", "channel", CH, fn="increase")],
                width=6,
                description="Raw codes missing from the channel's error table (treated as PENDING).",
            ),
        ],
    ),
    (
        "Routing",
        [
            Panel(
                "Routing share by channel",
                [
                    q(
                        f"sum by (channel) (rate(paygate_routing_decisions_total{{{CH_OP}}}[{RATE}])) "
                        "/ ignoring (channel) group_left () "
                        f"sum (rate(paygate_routing_decisions_total{{{OP}}}[{RATE}]))",
                        "{{channel}}",
                    )
                ],
                unit="percentunit",
                stack=True,
                min=0,
                max=1,
            ),
            Panel(
                "Decision reasons",
                [summed("paygate_routing_decisions_total", "reason", CH_OP)],
                unit="ops",
                stack=True,
            ),
            Panel(
                "Failovers",
                [summed("paygate_failovers_total", "from_channel, reason", 'from_channel=~"$channel"')],
                unit="ops",
            ),
            Panel(
                "Candidates removed by filter",
                [summed("paygate_routing_rejections_total", "filter", CH)],
                unit="ops",
                width=12,
            ),
            Panel(
                "No channel qualified",
                [summed("paygate_routing_no_candidate_total", "operation", OP)],
                unit="ops",
                width=12,
                description="Requests answered RESOURCE_EXHAUSTED because no channel passed the filters.",
            ),
        ],
    ),
    (
        "Flows",
        [
            Panel("Flows created", [summed("paygate_flows_created_total", "kind")], unit="ops"),
            Panel("Flows finished", [summed("paygate_flows_finished_total", "kind, status")], unit="ops"),
            Panel("Idempotent replays", [summed("paygate_flows_replayed_total", "kind")], unit="ops"),
        ],
    ),
    (
        "Unconfirmed results",
        [
            Panel(
                "Pending attempts and due polls",
                [q("sum(paygate_pending_attempts)", "pending attempts"), q("sum(paygate_poll_queue_due)", "polls due")],
                width=6,
            ),
            Panel(
                "Oldest pending attempt age",
                [q("max(paygate_oldest_pending_attempt_age_seconds)", "oldest pending")],
                unit="s",
                width=6,
                thresholds=[("green", None), ("orange", 3600), ("red", 7200)],
                description="Alert PaygatePendingAttemptTooOld above 2h for 5m.",
            ),
            Panel("Poll results", [summed("paygate_polls_total", "channel, result", CH)], unit="ops", width=12),
            Panel(
                "Review queue (needs_review)",
                [
                    q("max(paygate_needs_review_flows)", "needs_review flows"),
                    summed("paygate_poll_exhausted_total", "channel", CH, "increase", "poll exhausted {{channel}}"),
                ],
                description="Flows left PROCESSING after the poll schedule ran out; an operator decides.",
            ),
            Panel("Callbacks by result", [summed("paygate_callbacks_total", "channel, result", CH)], unit="ops"),
            Panel(
                "Discrepancies",
                [summed("paygate_discrepancies_total", "channel, source", CH, fn="increase")],
                description="Late results conflicting with a recorded terminal result: each one needs reconciliation.",
            ),
        ],
    ),
    (
        "Outbox",
        [
            Panel("Outbox backlog", [q("sum(paygate_outbox_backlog)", "unpublished events")], width=6),
            Panel(
                "Oldest unpublished event age",
                [q("max(paygate_outbox_oldest_unpublished_age_seconds)", "oldest unpublished")],
                unit="s",
                width=6,
                thresholds=[("green", None), ("orange", 60), ("red", 300)],
            ),
            Panel("Events published", [summed("paygate_outbox_published_total", "topic")], unit="ops", width=6),
            Panel("Publish errors", [summed("paygate_outbox_publish_errors_total", "error")], unit="ops", width=6),
        ],
    ),
    (
        "Positions (payout float)",
        [
            Panel(
                "Position available (minor units)",
                [
                    q(
                        f"sum by (channel, currency) (paygate_position_available_minor_units{{{CH}}})",
                        _legend("channel, currency"),
                    )
                ],
                unit="none",
                width=12,
                description="Channel float available for payouts, in minor units of the currency (fen, cents).",
            ),
            Panel(
                "Position reserved by payouts in flight (minor units)",
                [
                    q(
                        f"sum by (channel, currency) (paygate_position_reserved_minor_units{{{CH}}})",
                        _legend("channel, currency"),
                    )
                ],
                unit="none",
                width=12,
            ),
        ],
    ),
    (
        "Joint-loan settlement",
        [
            Panel(
                "Settlements not paid",
                [q("max by (status) (paygate_settlements_unfinished)", "{{status}}")],
                unit="none",
                width=12,
                description=(
                    "Funder settlements whose payout has not paid: PAYING (in flight or waiting for float), "
                    "PAYOUT_FAILED (refused by the bank; an operator re-sends it)."
                ),
            ),
            Panel(
                "Oldest unpaid settlement age",
                [q("max by (status) (paygate_settlement_oldest_age_seconds)", "{{status}}")],
                unit="s",
                width=12,
                thresholds=[("green", None), ("orange", 3600), ("red", 6 * 3600)],
            ),
        ],
    ),
    (
        "gRPC API",
        [
            Panel("Requests by method", [summed("paygate_grpc_server_requests_total", "method")], unit="reqps"),
            Panel(
                "Non-OK responses by code",
                [
                    summed("paygate_grpc_server_requests_total", "method, code", 'code!="OK"'),
                    q("paygate:grpc_server_error_ratio:rate5m", "server error ratio {{method}}"),
                ],
                unit="reqps",
                description=(
                    "Caller mistakes (INVALID_ARGUMENT, NOT_FOUND, ...) and server errors. "
                    "The server error ratio (right axis) excludes caller mistakes; alert above 5%."
                ),
            ),
            Panel(
                "Latency p99 / p50 by method",
                quantiles("paygate_grpc_server_request_duration_seconds", "method"),
                unit="s",
            ),
        ],
    ),
]


def _thresholds(steps: list[tuple[str, float | None]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for color, value in steps]}


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.min is not None:
        defaults["min"] = panel.min
    if panel.max is not None:
        defaults["max"] = panel.max
    if panel.thresholds:
        defaults["thresholds"] = _thresholds(panel.thresholds)
    overrides: list[dict[str, Any]] = []
    options: dict[str, Any]
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
        if panel.thresholds:
            defaults["custom"]["thresholdsStyle"] = {"mode": "dashed"}
        options = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
        ratio_refs = [chr(ord("A") + i) for i, qu in enumerate(panel.queries) if "ratio" in qu.expr and i > 0]
        for ref in ratio_refs:
            overrides.append(
                {
                    "matcher": {"id": "byFrameRefID", "options": ref},
                    "properties": [
                        {"id": "unit", "value": "percentunit"},
                        {"id": "custom.axisPlacement", "value": "right"},
                    ],
                }
            )
    else:
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background" if panel.thresholds else "value",
            "graphMode": "none",
            "textMode": panel.text_mode,
            "orientation": "auto",
        }
    result: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": overrides},
        "options": options,
        "targets": [
            {
                "datasource": DATASOURCE,
                "refId": chr(ord("A") + i),
                "expr": query.expr,
                "legendFormat": query.legend or "__auto",
                "range": True,
            }
            for i, query in enumerate(panel.queries)
        ],
    }
    if panel.description:
        result["description"] = panel.description
    return result


def _label_variable(name: str, label: str) -> dict[str, Any]:
    definition = f"label_values(paygate_channel_requests_total, {name})"
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "definition": definition,
        "query": {"query": definition, "refId": f"{name}-values"},
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    panel_id = 1
    y = 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x = 0
        row_height = 0
        for panel in row_panels:
            if x + panel.width > 24:
                x = 0
                y += row_height
                row_height = 0
            panels.append(_panel_json(panel, panel_id, x, y))
            panel_id += 1
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    return {
        "uid": "paygate-overview",
        "title": "paygate: channels, flows, outbox",
        "description": "Channel success rates, routing, unconfirmed results, outbox and gRPC API of paygate.",
        "tags": ["paygate", "payments"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Data source",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                _label_variable("channel", "Channel"),
                _label_variable("operation", "Operation"),
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")
