"""The Grafana dashboard's queries, checked against a real Prometheus; the per-channel success table.

* :func:`dashboard_queries` reads a dashboard JSON and returns the PromQL of
  every panel target with Grafana's variables replaced by concrete values
  (``$__rate_interval`` → ``1m``, ``$channel`` → ``.*``), so the expressions
  can be sent to Prometheus as they are.
* :func:`check_queries` runs them through the HTTP API; a query is OK when
  Prometheus accepts it and returns at least one series.
* :func:`success_table` renders paygate's ``/metrics`` text as a short table
  of channel outcomes and the success ratio (payer failures excluded, like
  the ``paygate:channel_success_ratio:rate5m`` recording rule).

``python -m gateway.obs.dashboard --prometheus http://127.0.0.1:9090`` prints
the check table and exits non-zero when a panel has no data.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.obs.promql import PrometheusError, prometheus_query

__all__ = [
    "DEFAULT_DASHBOARD",
    "DashboardQuery",
    "QueryResult",
    "check_queries",
    "dashboard_queries",
    "main",
    "referenced_metrics",
    "success_table",
]

DEFAULT_DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "paygate.json"

# Outcomes of paygate_channel_requests_total, in table order.
OUTCOMES = ("succeeded", "payer_failure", "channel_failure", "pending", "error")
# The success ratio's denominator: definite, channel-attributable answers.
DECIDED_OUTCOMES = ("succeeded", "channel_failure", "error")


@dataclass(frozen=True)
class DashboardQuery:
    panel_title: str
    expr: str
    ref_id: str = "A"


@dataclass(frozen=True)
class QueryResult:
    panel: str
    expr: str
    ok: bool
    series: int
    error: str | None = None


# --- reading the dashboard -------------------------------------------------------------


def _iter_panels(panels: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including the ones nested in collapsed rows."""
    for panel in panels:
        yield panel
        yield from _iter_panels(panel.get("panels", []))


def _substitutions(dashboard: dict[str, Any], rate_interval: str, range_: str) -> dict[str, str]:
    values = {
        "__rate_interval": rate_interval,
        "__interval": rate_interval,
        "__range": range_,
    }
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable.get("name")
        if not name or variable.get("type") == "datasource":
            continue
        # "All" for every dashboard variable: the widest query a user can make.
        values[name] = variable.get("allValue") or ".*"
    return values


def _expand(expr: str, values: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain") or match.group("old")
        return values.get(name, match.group(0))

    return _VARIABLE.sub(replace, expr)


# $name, ${name}, ${name:format}, [[name]]
_VARIABLE = re.compile(
    r"\$\{(?P<braced>[A-Za-z0-9_]+)(?::[^}]*)?\}|\$(?P<plain>[A-Za-z0-9_]+)|\[\[(?P<old>[A-Za-z0-9_]+)\]\]"
)


def dashboard_queries(path: Path | str, *, rate_interval: str = "1m", range_: str = "1h") -> list[DashboardQuery]:
    """The PromQL of every panel target in the dashboard at ``path``, variables expanded.

    Row panels and targets without an ``expr`` are skipped; hidden targets
    are included (they still run in Grafana when referenced).
    """
    dashboard = json.loads(Path(path).read_text())
    values = _substitutions(dashboard, rate_interval, range_)
    queries: list[DashboardQuery] = []
    for panel in _iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                queries.append(
                    DashboardQuery(
                        panel_title=str(panel.get("title", "")),
                        expr=_expand(str(expr), values),
                        ref_id=str(target.get("refId", "A")),
                    )
                )
    return queries


# --- metric names in a PromQL expression -------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"inf", "nan", "Inf", "NaN", "atan2"}
)


def referenced_metrics(expr: str) -> set[str]:
    """Metric names (and recording-rule names) selected by a PromQL expression.

    A lexical approximation good for our dashboards: strings, label matchers,
    ranges and grouping clauses are removed; what is left that is not a
    function, keyword or number is a metric name.
    """
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(0)
        before = text[match.start() - 1] if match.start() else " "
        after = text[match.end() :].lstrip()
        if before.isdigit() or before == "." or after.startswith("(") or name in _KEYWORDS:
            continue
        names.add(name)
    return names


# --- checking against Prometheus -----------------------------------------------------------


def check_queries(prom_url: str, queries: Sequence[DashboardQuery], *, timeout: float = 5.0) -> list[QueryResult]:
    """Run every query at "now"; OK means accepted by Prometheus and at least one series returned."""
    results: list[QueryResult] = []
    for query in queries:
        try:
            series = len(prometheus_query(prom_url, query.expr, timeout=timeout))
        except PrometheusError as exc:
            results.append(QueryResult(query.panel_title, query.expr, ok=False, series=0, error=str(exc)))
            continue
        error = None if series else "no data"
        results.append(QueryResult(query.panel_title, query.expr, ok=series > 0, series=series, error=error))
    return results


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Plain-text table, columns padded to their widest cell."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _shorten(text: str, limit: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def results_table(results: Sequence[QueryResult]) -> str:
    rows = [("ok" if r.ok else "FAIL", r.series, _shorten(r.panel, 40), _shorten(r.error or r.expr)) for r in results]
    return render_table(("status", "series", "panel", "query / problem"), rows)


# --- /metrics text → success table -----------------------------------------------------------


def success_table(metrics_text: str) -> str:
    """Per channel and operation: outcome counts and success ratio (payer failures excluded).

    ``metrics_text`` is a Prometheus text exposition (a gateway's ``/metrics``).
    The ratio is succeeded / (succeeded + channel_failure + error); pending and
    payer_failure do not count, as in ``paygate:channel_success_ratio:rate5m``.
    """
    counts: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0.0))
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name != "paygate_channel_requests_total":
                continue
            labels = sample.labels
            outcome = labels.get("outcome", "")
            key = (labels.get("channel", "?"), labels.get("operation", "?"))
            row = counts[key]
            row[outcome] = row.get(outcome, 0.0) + sample.value
    if not counts:
        return "no channel requests recorded"
    rows = []
    for (channel, operation), row in sorted(counts.items()):
        decided = sum(row.get(o, 0.0) for o in DECIDED_OUTCOMES)
        ratio = f"{row['succeeded'] / decided:.1%}" if decided else "-"
        rows.append((channel, operation, *(int(row.get(o, 0.0)) for o in OUTCOMES), ratio))
    return render_table(("channel", "operation", *OUTCOMES, "success"), rows)


def main(argv: Sequence[str] | None = None) -> int:
    """``check-dashboard``: run every dashboard query against a Prometheus; 0 when all return data."""
    parser = argparse.ArgumentParser(prog="paygate obs check-dashboard", description=main.__doc__)
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD, help="Grafana dashboard JSON")
    parser.add_argument("--rate-interval", default="1m", help="value substituted for $__rate_interval")
    args = parser.parse_args(argv)
    if not args.dashboard.is_file():
        print(f"dashboard not found: {args.dashboard}", file=sys.stderr)
        return 2
    queries = dashboard_queries(args.dashboard, rate_interval=args.rate_interval)
    results = check_queries(args.prometheus, queries)
    print(results_table(results))
    failed = sum(not r.ok for r in results)
    print(f"\n{len(results) - failed}/{len(results)} queries returned data")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
