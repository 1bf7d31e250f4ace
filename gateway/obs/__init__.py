"""Observability helpers: run a real Prometheus, check the Grafana dashboard's queries, summarise /metrics.

* :mod:`gateway.obs.prometheus` starts a throwaway ``prometheus`` process
  (tests, e2e, local runs).
* :mod:`gateway.obs.dashboard` extracts the PromQL of every dashboard panel,
  runs it against a Prometheus and renders the per-channel success table.
* :mod:`gateway.obs.synthetic` serves :data:`gateway.metrics.REGISTRY` with
  synthetic traffic on every metric, for dashboard work without a gateway.
"""
