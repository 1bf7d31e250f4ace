"""Observability the service ships: metric series declared at start-up, the dashboard check, /metrics summaries.

* :mod:`gateway.obs.series` declares the alert-relevant series at zero when
  the gateway starts.
* :mod:`gateway.obs.dashboard` extracts the PromQL of every dashboard panel,
  runs it against a Prometheus and renders the per-channel success table
  (``paygate obs check-dashboard``).
* :mod:`gateway.obs.promql` is the Prometheus HTTP API client they query with.

Starting a throwaway Prometheus and serving synthetic metrics are development
tools: :mod:`devstack.prometheus` and :mod:`devstack.synthetic`.
"""
