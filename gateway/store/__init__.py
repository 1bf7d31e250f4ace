"""All of paygate's SQL, one module per table family (MariaDB through aiomysql).

* ``db``: the pool, the unit of work, migrations; the driver's exceptions become ours here
* ``rows``: the row types the rest of the gateway speaks (no I/O)
* ``flows`` / ``flow_batch`` / ``flow_sql``: flows and attempts, one by one and group-committed
* ``poll_queue``, ``outbox``, ``positions``, ``agreements``, ``channel_states``,
  ``observations``, ``discrepancies``, ``audit``: one table (family) each
* ``batch``: the group committer; ``migrations/``: the schema

Use cases depend on the ports in gateway/ports.py; gateway/app.py picks these implementations.
"""
