"""Issue 16 acceptance: reconciliation on real MariaDB against the simulators' statements over HTTP.

For each of the three formats (sandbox, Alipay, WeChat Pay): a day of ~2,000 flows booked both
in our tables and in the simulator's ledger, and one injected fault of each class. The run must
find each fault exactly once, in its class, flag nothing else, settle the PROCESSING and
needs_review flows the statement proves (audited, one result event each) and change no
terminal flow. Then: a line dated the next day is carried over, not reported, and found on the
next day's statement; a malformed file imports nothing and names its line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.recon_seed import SeedAttempt, seed
from channels.contract import Channel
from channels.registry import ChannelSpec, factory_for
from channels.simkit import Behaviour, EntryKind, SimulatorHandle, create_simulator
from channels.statements import statement_format
from gateway.businessday import BusinessCalendar
from gateway.errors import InvalidInput
from gateway.recon.config import ReconConfig
from gateway.recon.model import ItemClass, RunStatus
from gateway.recon.service import ChannelBooks, Reconciler, Trigger
from gateway.store.db import Database
from gateway.store.flows import MySQLFlowStore
from gateway.store.recon import MySQLReconStore
from paygate.v1 import events_pb2
from routing.config import FeeSchedule

CHANNEL = "bank-r"
DAY_FLOWS = 2_000
FEE_BPS = 60


@dataclass
class Rig:
    name: str
    sim: SimulatorHandle
    channel: Channel
    db: Database
    flows: MySQLFlowStore
    store: MySQLReconStore

    def reconciler(self, carry_over_days: int = 0) -> Reconciler:
        books = {CHANNEL: ChannelBooks(self.channel, FeeSchedule(rate_ppm=FEE_BPS * 100))}
        config = ReconConfig(carry_over_days=carry_over_days, stage_batch=500)
        return Reconciler(self.store, self.flows, books, BusinessCalendar.named("Asia/Shanghai"), config)

    def today(self) -> date:
        return self.sim.ledger.booking_day(self.sim.ledger.now())


@pytest.fixture(params=["sandbox", "alipay", "wechatpay"])
async def rig(request: pytest.FixtureRequest, database: Database) -> AsyncIterator[Rig]:
    kw: dict[str, Any] = {} if request.param == "sandbox" else {"key_size": 1024}
    sim = create_simulator(request.param, Behaviour(), **kw)
    await sim.start()
    sim.ledger.fee_bps = FEE_BPS
    channel = factory_for(request.param)(ChannelSpec(CHANNEL, request.param, sim.adapter_settings()))
    await channel.start()
    flows = MySQLFlowStore(database, group_commit=False)
    try:
        yield Rig(request.param, sim, channel, database, flows, MySQLReconStore(database))
    finally:
        await channel.stop()
        await sim.stop()


def book(
    rig: Rig,
    order_no: str,
    amount: int,
    *,
    kind: EntryKind = EntryKind.WITHHOLD,
    fail: bool = False,
    original: str = "",
) -> None:
    """The channel executed (or declined) the order: it is on the channel's books of today."""
    rig.sim.ledger.record(order_no, kind, amount, "CNY", f"acct-{order_no}", {}, original_order_no=original)
    if fail:
        rig.sim.ledger.fail(order_no, "INSUFFICIENT_FUNDS")
    else:
        rig.sim.ledger.execute(order_no)


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


async def snapshot(db: Database) -> dict[str, tuple[str, int, Any]]:
    rows = await db.fetchall("SELECT request_id, status, version, updated_at FROM flows")
    return {r["request_id"]: (r["status"], r["version"], r["updated_at"]) for r in rows}


async def faults(rig: Rig, spec: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{rig.sim.base_url}/_admin/statement/faults", json=spec) as answer:
            assert answer.status == 200, await answer.text()


async def test_a_day_with_one_fault_of_each_class(rig: Rig) -> None:
    fee_of: Callable[[int], int] = lambda amount: rig.sim.ledger.fee_for(EntryKind.WITHHOLD, amount)  # noqa: E731
    lists_failures = statement_format(rig.name).lists_failures
    seeded: list[SeedAttempt] = []
    at = now() - timedelta(seconds=5)
    for i in range(DAY_FLOWS):
        order, amount = f"D{i:05d}", 10_000 + i * 7
        book(rig, order, amount)
        # half the attempts carry the channel's fee from the result, half rely on the fee schedule
        seeded.append(SeedAttempt(order, amount, "SUCCEEDED", at, fee=fee_of(amount) if i % 2 else None))
    # declined, and listed as such where the format lists failures: matched, nothing to say
    for i in range(20):
        book(rig, f"DF{i:03d}", 5_000, fail=True)
        seeded.append(SeedAttempt(f"DF{i:03d}", 5_000, "FAILED", at))
    # the channel debited after we recorded a failure: channel_only
    book(rig, "LATEDEBIT", 7_700)
    seeded.append(SeedAttempt("LATEDEBIT", 7_700, "FAILED", at))
    # still PROCESSING (one in review): the statement settles them
    book(rig, "PEND1", 8_800)
    book(rig, "REVIEW1", 9_900)
    seeded.append(SeedAttempt("PEND1", 8_800, "PENDING", None))
    seeded.append(SeedAttempt("REVIEW1", 9_900, "PENDING", None, needs_review=True))
    if lists_failures:  # a PROCESSING flow the channel declined: settled FAILED
        book(rig, "PENDFAIL", 6_600, fail=True)
        seeded.append(SeedAttempt("PENDFAIL", 6_600, "PENDING", None))
    # status_mismatch: a line that lists as failed what we recorded as a success, or (in formats
    # that list no failures) a refund booked under the number of our withhold
    if lists_failures:
        book(rig, "STATUS1", 4_400, fail=True)
    else:
        book(rig, "STATUS1", 4_400, kind=EntryKind.REFUND, original="D00040")
    seeded.append(SeedAttempt("STATUS1", 4_400, "SUCCEEDED", at, fee=fee_of(4_400)))
    # an open attempt of a flow in review that the channel never booked: not on the statement, nothing to say
    seeded.append(SeedAttempt("NOTBOOKED", 3_300, "PENDING", None, needs_review=True))
    await seed(rig.db, CHANNEL, seeded, created_at=at)
    day = rig.today()
    await faults(
        rig,
        {
            "drop": ["D00010"],  # local_only
            "amount": {"D00020": 12_345},  # amount_mismatch
            "fee": {"D00031": 1},  # fee_mismatch (its attempt has the channel's fee)
            "extra": [{"day": day.isoformat(), "order_no": "GHOST1", "amount": 5_000}],  # channel_only
        },
    )
    before = await snapshot(rig.db)

    run = await rig.reconciler(carry_over_days=0).reconcile(CHANNEL, day, trigger=Trigger.MANUAL, operator="alice")

    assert run.status is RunStatus.SUCCEEDED and run.outcome == "inconsistent", run.error
    items = await rig.store.items(run_id=run.id)
    found = sorted((i.item_class.value, i.channel_order_no) for i in items)
    settled = [("resolved_by_statement", o) for o in ("PEND1", "REVIEW1")]
    if lists_failures:
        settled.append(("resolved_by_statement", "PENDFAIL"))
    expected = sorted(
        [
            ("local_only", "D00010"),
            ("amount_mismatch", "D00020"),
            ("fee_mismatch", "D00031"),
            ("channel_only", "GHOST1"),
            ("channel_only", "LATEDEBIT"),
            ("status_mismatch", "STATUS1"),
            *settled,
        ]
    )
    assert found == expected
    assert run.discrepancies == 6 and run.resolved == len(settled)
    lines = DAY_FLOWS + 1 + 2 + 1 + (20 + 1 if lists_failures else 0)  # - dropped + ghost
    assert run.lines == lines
    assert run.matched == lines - 5 - len(settled)  # the line of each discrepancy but local_only, and the settled
    amount = next(i for i in items if i.channel_order_no == "D00020")
    assert (amount.local_amount, amount.line_amount) == (10_140, 12_345)
    fee = next(i for i in items if i.channel_order_no == "D00031")
    assert (fee.local_fee, fee.line_fee) == (fee_of(10_217), 1)

    # the settled flows: resolved by reconciliation, audited, one result event each
    after = await snapshot(rig.db)
    settled_orders = {o for _, o in settled}
    for order in settled_orders:
        flow = await rig.flows.by_request_id("recon-seed", order)
        assert flow is not None
        assert flow.status.value == ("FAILED" if order == "PENDFAIL" else "SUCCEEDED")
        assert not flow.needs_review
    events = await rig.db.fetchall(
        "SELECT o.msg_key, COUNT(*) AS n FROM outbox o WHERE o.event_type='FLOW_RESULT' GROUP BY o.msg_key"
    )
    assert len(events) == len(settled_orders) and all(e["n"] == 1 for e in events)
    audits = await rig.db.fetchall("SELECT operator, action, reason FROM audit_log WHERE action='resolve_flow'")
    assert len(audits) == len(settled_orders)
    assert all(a["operator"] == "reconciliation" and f"statement {CHANNEL}" in a["reason"] for a in audits)
    # nothing else changed: every terminal flow, and the open flow the channel never booked
    changed = {order for order in before if before[order] != after[order]}
    assert changed == settled_orders

    # a re-run supersedes: same findings, the settled flows now match, nothing resolved twice
    again = await rig.reconciler(carry_over_days=0).reconcile(CHANNEL, day)
    assert again.seq == run.seq + 1 and again.resolved == 0 and again.discrepancies == 6
    assert (await rig.store.run(run.id)).superseded_by == again.id  # type: ignore[union-attr]
    current = await rig.reconciler().discrepancies(day=day, channel=CHANNEL)
    assert sorted((i.item_class.value, i.channel_order_no) for i in current) == [
        e for e in expected if e[0] != "resolved_by_statement"
    ]
    # each critical discrepancy published once, in the run's commit (the re-run does not publish it again)
    outbox = await rig.db.fetchall("SELECT event_type, flow_id, msg_key, payload FROM outbox ORDER BY id")
    assert sum(1 for r in outbox if r["event_type"] == "FLOW_RESULT") == len(settled_orders)
    critical = [events_pb2.FlowEvent.FromString(r["payload"]) for r in outbox if r["event_type"] == "RECON_DISCREPANCY"]
    assert sorted((e.recon.__getattribute__("class"), e.recon.channel_order_no) for e in critical) == [
        ("channel_only", "GHOST1"),
        ("channel_only", "LATEDEBIT"),
        ("local_only", "D00010"),
    ]
    ghost = next(e for e in critical if e.recon.channel_order_no == "GHOST1")
    assert ghost.event_type == events_pb2.RECON_DISCREPANCY and ghost.flow_no == "" and ghost.recon.line_amount == 5_000
    assert ghost.recon.run_id == run.id and ghost.recon.business_day == day.isoformat()
    late = next(e for e in critical if e.recon.channel_order_no == "LATEDEBIT")
    assert (
        late.request_id == "LATEDEBIT" and late.recon.local_status == "FAILED" and late.recon.line_status == "SUCCEEDED"
    )
    # totals of both sides
    stmt, ours = run.totals["statement"]["withhold"], run.totals["local"]["withhold"]
    assert stmt["count"] == DAY_FLOWS + 3  # less the dropped line, plus the ghost, LATEDEBIT and the settled two
    assert ours["count"] == DAY_FLOWS + 3  # the day's successes: STATUS1 and the two settled (they ended today)


async def test_a_line_dated_the_next_day_is_carried_over_then_found(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    at = now() - timedelta(seconds=5)
    seeded = []
    for i in range(200):
        book(rig, f"C{i:04d}", 20_000 + i)
        seeded.append(SeedAttempt(f"C{i:04d}", 20_000 + i, "SUCCEEDED", at))
    await seed(rig.db, CHANNEL, seeded, created_at=at)
    day = rig.today()
    rig.sim.statements.faults.date_next_day("C0007")  # booked at 23:59:59, on tomorrow's bill
    rig.sim.statements.faults.drop("C0008")  # never on any bill

    run = await rig.reconciler(carry_over_days=1).reconcile(CHANNEL, day)
    assert run.outcome == "consistent" and run.discrepancies == 0 and run.carried == 2
    assert await rig.store.items(run_id=run.id) == []

    clock = rig.sim.ledger._clock
    monkeypatch.setattr(rig.sim.ledger, "_clock", lambda: clock() + 86_400)  # tomorrow, the bill is out
    following = await rig.reconciler(carry_over_days=1).reconcile(CHANNEL, day + timedelta(days=1))
    items = await rig.store.items(run_id=following.id)
    # C0007 is on it and matches; C0008 was looked for one more day and is now declared
    assert [(i.item_class, i.channel_order_no) for i in items] == [(ItemClass.LOCAL_ONLY, "C0008")]
    assert following.matched == 1 and following.lines == 1
    carry = await rig.db.fetchall("SELECT channel_order_no, status FROM recon_carry ORDER BY channel_order_no")
    assert [(c["channel_order_no"], c["status"]) for c in carry] == [("C0007", "FOUND"), ("C0008", "DECLARED")]


async def test_a_malformed_file_imports_nothing_and_names_the_line(rig: Rig, tmp_path: Path) -> None:
    at = now() - timedelta(seconds=5)
    for i in range(50):
        book(rig, f"M{i:03d}", 30_000 + i)
    await seed(
        rig.db, CHANNEL, [SeedAttempt(f"M{i:03d}", 30_000 + i, "SUCCEEDED", at) for i in range(50)], created_at=at
    )
    day = rig.today()
    fetched = await rig.channel.fetch_statement(day, str(tmp_path))
    broken = tmp_path / "broken.bin"
    if rig.name == "sandbox":  # a text file: spoil one amount in the middle
        text = Path(fetched.path).read_text().splitlines()
        row = next(n for n, t in enumerate(text) if t.startswith("M025,"))
        cells = text[row].split(",")
        cells[3] = "12x"
        text[row] = ",".join(cells)
        broken.write_text("\n".join(text) + "\n")
        where = f"line {row + 1}"
    else:  # archives: cut the file short
        data = Path(fetched.path).read_bytes()
        broken.write_bytes(data[: len(data) // 2])
        where = "line"
    with pytest.raises(InvalidInput) as err:
        await rig.reconciler().import_file(CHANNEL, day, str(broken), fetched.format, operator="alice")
    assert err.value.field == "file" and where in str(err.value)
    [run] = await rig.store.runs(channel=CHANNEL)
    assert run.status is RunStatus.FAILED and run.lines == 0 and where in run.error
    assert (await rig.db.fetchone("SELECT COUNT(*) AS n FROM recon_lines")) == {"n": 0}
    assert (await rig.db.fetchone("SELECT COUNT(*) AS n FROM recon_items")) == {"n": 0}
