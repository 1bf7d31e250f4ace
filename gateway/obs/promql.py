"""Instant PromQL queries over the Prometheus HTTP API (``paygate obs check-dashboard`` and its tests).

Blocking (urllib); from asyncio code call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["PrometheusError", "api_get", "prometheus_query"]


class PrometheusError(RuntimeError):
    """Prometheus could not be started, did not become ready, or answered with an error."""


def api_get(url: str, timeout: float) -> dict[str, Any]:
    """``GET url`` on a Prometheus server and decode its JSON answer."""
    with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 - URL built from our own base
        body: dict[str, Any] = json.load(reply)
    return body


def prometheus_query(base_url: str, expr: str, *, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Evaluate ``expr`` at "now" through the HTTP API; return ``data.result``.

    Raises :class:`PrometheusError` with Prometheus' own error text when the
    query is rejected (bad PromQL, unknown function, timeout).
    """
    url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        body = api_get(url, timeout)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.load(exc).get("error", str(exc))
        except ValueError:
            detail = str(exc)
        raise PrometheusError(f"query rejected: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise PrometheusError(f"cannot reach Prometheus at {base_url}: {exc}") from exc
    if body.get("status") != "success":
        raise PrometheusError(f"query failed: {body.get('error', body)}")
    data = body.get("data", {})
    if data.get("resultType") == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    result: list[dict[str, Any]] = data.get("result", [])
    return result
