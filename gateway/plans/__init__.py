"""Withholding plans (代扣计划): repayment instalments collected at each product's daily time points.

The package, from the inside out:

* :mod:`gateway.plans.model`: the records (plans, instalments, attempts, runs) and their statuses;
* :mod:`gateway.plans.policy`: schedules and policies: time points, what is due, what a failure
  leads to, quiet windows (pure, no I/O);
* :mod:`gateway.plans.config`: the ``[plans]`` configuration table;
* :mod:`gateway.plans.spec`: validating submitted plans item by item, canonical hashes (pure);
* :mod:`gateway.plans.ratelimit`: token buckets per channel, shared by every replica through the store;
* :mod:`gateway.plans.ports`: what the use cases need from storage and from the withhold path;
* :mod:`gateway.plans.service`: the caller's and operator's use cases (submit, pause, settle, runs ...);
* :mod:`gateway.plans.executor`: running each time point: claims, rate limits, the withholds
  (through the normal ``FlowService.withhold``), outcomes and their events, crash recovery.

SQL lives in ``gateway/store/plans.py``; the gRPC servicer in ``gateway/api/plans.py``; the
operating manual in ``docs/PLANS.md``.
"""
