"""Issue 8 (and 13): the short fault-injection run (``python -m bench.chaos --short``) and its checker's rules.

The run is a subprocess with a hard timeout: real broker, banks and two
gateway replicas (clients spread over both); each replica SIGKILLed once, one
broker restart, a channel disabled and enabled again through one replica
(every replica must obey within 2 s), one bank outage, forged callbacks; no
MariaDB restart (the server is shared). The full run is ``make chaos``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import aiomysql
import pytest

from bench.chaos_check import FlowView, ForgedCallback, Replay, judge
from bench.chaos_events import EventLog, SeenEvent
from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.errors import DatabaseUnavailable
from gateway.store.db import Database, DatabaseConfig
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import running_gateway

ROOT = Path(__file__).resolve().parents[2]
LAST_LINE = re.compile(
    r"^chaos: requests=(\d+) crashes=(\d+) broker_outages=(\d+) db_restarts=(\d+) double_debits=(\d+) "
    r"mismatches=(\d+) lost_events=(\d+) stuck=(\d+) forged_accepted=(\d+) replicas=(\d+) state_lag_s=([\d.]+)$"
)


def test_short_chaos_run_keeps_every_invariant() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,  # below pytest-timeout (120 s); the run takes about 30 s
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    match = LAST_LINE.match(lines[-1])
    assert match, f"last line: {lines[-1]!r}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    *counts, lag = match.groups()
    requests, crashes, broker_outages, db_restarts, *must_be_zero, replicas = (int(g) for g in counts)
    assert requests >= 200
    assert (replicas, crashes, broker_outages, db_restarts) == (2, 2, 1, 0)
    assert must_be_zero == [0, 0, 0, 0, 0], proc.stdout[-3000:]
    assert 0 < float(lag) <= 2.0, proc.stdout[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:]


# --- the checker's rules on hand-made data (it must be able to say no) ---------------------------


def _ledger(*entries: tuple[str, str, int]) -> dict[str, object]:
    return {
        "entries": [{"order_no": o, "status": s} for o, s, _ in entries],
        "debits_by_order": {o: n for o, _, n in entries if n},
    }


def _events(*results: tuple[str, str, str]) -> EventLog:
    log = EventLog()
    for event_id, flow_no, status in results:
        log.events[event_id] = SeenEvent(event_id, "FLOW_RESULT", flow_no, "", status)
    return log


def _flow(rid: str, status: str, *orders: str, review: bool = False) -> FlowView:
    return FlowView(rid, f"F-{rid}", "WITHHOLD", status, review, orders)


def test_consistent_run_is_clean() -> None:
    flows = [
        _flow("r1", "SUCCEEDED", "o1", "o2"),
        _flow("r2", "FAILED", "o3"),
        _flow("r3", "PROCESSING", "o4", review=True),
    ]
    ledgers = {
        "a": _ledger(("o1", "FAILED", 0), ("o3", "FAILED", 0), ("o4", "PENDING", 0)),
        "b": _ledger(("o2", "SUCCEEDED", 1)),
    }
    verdict = judge(flows, ledgers, _events(("e1", "F-r1", "SUCCEEDED"), ("e2", "F-r2", "FAILED")))
    assert verdict.ok, verdict.examples
    assert verdict.notes["needs_review"] == 1


def test_double_debit_mismatch_lost_event_and_stuck_are_counted() -> None:
    flows = [
        _flow("r1", "SUCCEEDED", "o1", "o2"),  # debited on both banks
        _flow("r2", "FAILED", "o3"),  # the bank took the money
        _flow("r3", "SUCCEEDED", "o4"),  # no event
        _flow("r4", "PROCESSING", "o5"),  # stuck
    ]
    ledgers = {
        "a": _ledger(("o1", "SUCCEEDED", 1), ("o3", "SUCCEEDED", 1), ("o4", "SUCCEEDED", 1)),
        "b": _ledger(("o2", "SUCCEEDED", 1), ("o9", "SUCCEEDED", 1)),
    }
    events = _events(("e1", "F-r1", "SUCCEEDED"), ("e2", "F-r2", "FAILED"), ("e3", "F-r2", "FAILED"))
    verdict = judge(flows, ledgers, events, replays=[Replay("r1", "F-r1", "F-other", True)])
    assert verdict.double_debits == 1
    # r1 (2 debits), r2 (FAILED but debited), r2's second result event, the orphan o9, the bad replay
    assert verdict.mismatches == 5
    assert verdict.lost_events == 1
    assert verdict.stuck == 1
    assert not verdict.ok


def test_forged_callbacks_count_when_answered_or_followed() -> None:
    flows = [_flow("r1", "SUCCEEDED", "o1"), _flow("r2", "FAILED", "o2")]
    ledgers = {"a": _ledger(("o1", "FAILED", 0), ("o2", "FAILED", 0))}
    forged = [
        ForgedCallback("a", "o1", "SUCCEEDED", 400),  # rejected, but the flow followed it anyway
        ForgedCallback("a", "o2", "SUCCEEDED", 200),  # accepted outright
        ForgedCallback("a", "o2", "SUCCEEDED", None),  # never delivered
    ]
    verdict = judge(flows, ledgers, _events(("e1", "F-r1", "SUCCEEDED"), ("e2", "F-r2", "FAILED")), forged)
    assert verdict.forged_accepted == 2
    assert verdict.notes["forged_undelivered"] == 1


# --- regressions found by the full run --------------------------------------------------------


async def test_rollback_on_a_lost_connection_is_database_unavailable(
    database: Database, db_config: DatabaseConfig
) -> None:
    """A MariaDB restart under a read-only unit of work made the rollback raise a raw pymysql
    error: callers got INTERNAL instead of UNAVAILABLE (and did not retry)."""
    killer = await aiomysql.connect(
        host=db_config.host,
        port=db_config.port,
        user=db_config.user,
        password=db_config.password.reveal(),
        autocommit=True,
    )
    try:
        with pytest.raises(DatabaseUnavailable):
            async with database.transaction() as tx:
                row = await tx.fetchone("SELECT CONNECTION_ID() AS id")
                assert row is not None
                async with killer.cursor() as cur:
                    await cur.execute(f"KILL {int(row['id'])}")
                # no commit: leaving the block rolls back on a connection the server has closed
    finally:
        killer.close()
    assert await database.fetchone("SELECT 1 AS one") == {"one": 1}


async def test_a_failover_cut_short_is_finished_by_recovery(db_config: DatabaseConfig) -> None:
    """A gateway SIGKILLed (or a database lost) after attempt 1 failed 'safe elsewhere' but before
    attempt 2 was recorded left the flow PROCESSING forever: nothing to poll, not even in review."""
    async with running_gateway(db_config, {"bank-a": Behaviour(), "bank-b": Behaviour()}) as h:
        card = luhn_card()
        await h.bind_card(card, ["bank-a", "bank-b"])
        store = h.gateway.flows.store
        real_add_attempt, real_finish = store.add_attempt, store.finish_from_attempt

        async def database_gone(*args: object, **kw: object) -> object:
            raise DatabaseUnavailable("lost connection (test)")

        store.add_attempt = database_gone  # type: ignore[method-assign]
        store.finish_from_attempt = database_gone  # type: ignore[method-assign,assignment]
        busy = pb.WithholdRequest(
            request_id="strand-1", amount=pb.Money(amount=10003, currency="CNY"), account_no=card, bank_code="ICBC"
        )
        # the flow is recorded: the caller gets it, never the database's error
        answered = await h.stub.Withhold(busy, metadata=h.md())
        assert answered.status == pb.PROCESSING and [a.status for a in answered.attempts] == [pb.ATTEMPT_FAILED]
        store.add_attempt, store.finish_from_attempt = real_add_attempt, real_finish  # type: ignore[method-assign]
        flow = await h.stub.GetFlow(pb.GetFlowRequest(request_id="strand-1"), metadata=h.md())
        assert flow.status == pb.PROCESSING and [a.status for a in flow.attempts] == [pb.ATTEMPT_FAILED]
        await h.gateway.poller.recover()
        flow = await h.stub.GetFlow(pb.GetFlowRequest(request_id="strand-1"), metadata=h.md())
        assert flow.status == pb.FAILED and flow.failure.code == "CHANNEL_BUSY"
        results = await h.gateway.db.fetchall("SELECT id FROM outbox WHERE event_type='FLOW_RESULT'")
        assert len(results) == 1
        assert sum(h.debits().values()) == 0
