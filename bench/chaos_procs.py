"""The fault-injection run's stack (``python -m bench.chaos``): its configuration and how to hurt MariaDB.

The processes themselves (broker, sandbox banks, gateway replicas) are
:mod:`devstack`'s, spawned through one :class:`~devstack.processes.ProcessSet`
that stops them all on the way out, whatever happened. Nothing here knows
about payments: the workload and the checks are in ``bench/chaos.py`` and
``bench/chaos_check.py``.
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

from devstack.config import GatewayPorts, gateway_config
from devstack.kafka import gateway_kafka
from devstack.stack import SandboxProcess

CALLER = "chaos-loans"
TOKEN = "chaos-loans-token-0123456789"
OPERATOR_TOKEN = "chaos-operator-token-0123456789"
TOPIC = "paygate.flow-results"
MERCHANT_ID = "chaos-merchant"


def chaos_config(
    ports: GatewayPorts, database: str, bootstrap: str, sandboxes: list[SandboxProcess], replica_id: str
) -> dict[str, Any]:
    """The configuration of replica ``replica_id`` for the run (every replica shares the database and topic)."""
    return gateway_config(
        ports,
        server={
            "grpc_host": "127.0.0.1",
            "http_host": "127.0.0.1",
            "metrics_host": "127.0.0.1",
            "default_wait_ms": 2000,
            "grace_s": 2,
            # a stable name per replica: a restarted one recovers what its killed run left at once
            "replica_id": replica_id,
        },
        database={"database": database, "pool_min": 2, "pool_max": 30, "connect_timeout_s": 2},
        security={"account_hash_key": "chaos-account-hash-key-0123456789"},
        callers={CALLER: TOKEN},
        operators={"chaos": {"token": OPERATOR_TOKEN, "role": "operator"}},
        poller={
            "interval_s": 0.2,
            "first_delay_s": 0.5,
            # A killed gateway's leases must expire quickly, or its rows wait a minute.
            "lease_s": 5,
            # Short poll schedules so every pending result resolves (or reaches review) within the run.
            "schedule": [[0.5, 40], [2, 60]],
            "not_found_close_after_s": 5,
        },
        logging={"format": "text", "level": "WARNING"},
        kafka=gateway_kafka(bootstrap, TOPIC, request_timeout_ms=3000, backoff_max_s=2),
        channels=[sandbox.channel(timeout_s=1.0) for sandbox in sandboxes],
    )


def restart_mariadb(timeout: float = 60.0) -> float:
    """Shut the shared MariaDB down and start it again; returns the seconds it was unreachable.

    Other agents use this server too: the outage is kept as short as the
    server allows. ``mysqladmin shutdown`` returns before the server process
    has exited, and starting a second one meanwhile does nothing, so the old
    process is waited for first; a start that does not answer pings is retried.
    """
    began = time.monotonic()
    deadline = began + timeout
    subprocess.run(["mysqladmin", "-uroot", "-h127.0.0.1", "shutdown"], check=False, timeout=60, capture_output=True)
    while _mariadbd_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    while time.monotonic() < deadline:
        start = ["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"]
        subprocess.run(start, check=True, timeout=30, capture_output=True)
        tried_until = min(deadline, time.monotonic() + 15)
        while time.monotonic() < tried_until:
            ping = ["mysqladmin", "-uroot", "-h127.0.0.1", "--connect-timeout=1", "ping"]
            if subprocess.run(ping, capture_output=True, timeout=10).returncode == 0:
                return time.monotonic() - began
            time.sleep(0.2)
    raise RuntimeError(f"MariaDB did not come back within {timeout:.0f} s")


def _mariadbd_running() -> bool:
    return subprocess.run(["pgrep", "-x", "mariadbd"], capture_output=True, timeout=10).returncode == 0


def mysql(statement: str) -> None:
    subprocess.run(["mysql", "-uroot", "-h127.0.0.1", "-e", statement], check=True, timeout=60, capture_output=True)
