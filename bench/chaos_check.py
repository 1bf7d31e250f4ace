"""The fault-injection run's verdict: the gateway's flows against the banks' ledgers and the Kafka topic.

Pure functions over plain data (no I/O), so the rules can be read and unit
tested on their own. The ledgers are the simulated banks' own books (what
really moved), never paygate's records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.chaos_events import EventLog

TERMINAL = ("SUCCEEDED", "FAILED")


@dataclass(frozen=True)
class FlowView:
    """A flow as ``GetFlow`` returned it at the end of the run."""

    request_id: str
    flow_no: str
    kind: str
    status: str
    needs_review: bool
    orders: tuple[str, ...]  # channel order numbers of its attempts


@dataclass(frozen=True)
class ForgedCallback:
    """One forged (wrong key) or tampered (signed, then altered) callback sent to the gateway."""

    channel: str
    order_no: str
    claim: str  # the status it claimed: SUCCEEDED or FAILED
    http_status: int | None  # None: not delivered (gateway down)


@dataclass(frozen=True)
class Replay:
    """A request sent again with the same request_id after it had an answer."""

    request_id: str
    first_flow_no: str
    replay_flow_no: str
    replayed_flag: bool


@dataclass
class Verdict:
    double_debits: int = 0
    mismatches: int = 0
    lost_events: int = 0
    stuck: int = 0
    forged_accepted: int = 0
    notes: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def note(self, key: str, n: int = 1) -> None:
        self.notes[key] = self.notes.get(key, 0) + n

    def example(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)

    @property
    def ok(self) -> bool:
        return not (self.double_debits or self.mismatches or self.lost_events or self.stuck or self.forged_accepted)


def ledger_orders(ledgers: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, str, int]]:
    """order_no -> (channel, ledger status, debits) across every bank's ledger dump."""
    out: dict[str, tuple[str, str, int]] = {}
    for channel, dump in ledgers.items():
        debits: Mapping[str, int] = dump.get("debits_by_order", {})
        for entry in dump.get("entries", []):
            order_no = entry["order_no"]
            out[order_no] = (channel, entry["status"], int(debits.get(order_no, 0)))
        for order_no, n in debits.items():
            if order_no not in out:
                out[order_no] = (channel, "UNKNOWN", int(n))
    return out


def judge(
    flows: Iterable[FlowView],
    ledgers: Mapping[str, Mapping[str, Any]],
    events: EventLog,
    forged: Iterable[ForgedCallback] = (),
    replays: Iterable[Replay] = (),
) -> Verdict:
    """Apply every rule; the five must-be-zero figures are Verdict's first five fields."""
    verdict = Verdict()
    orders = ledger_orders(ledgers)
    results = events.results_by_flow()
    by_order: dict[str, FlowView] = {}
    flow_list = list(flows)
    for flow in flow_list:
        for order_no in flow.orders:
            by_order[order_no] = flow
        debits = sum(orders.get(o, ("", "", 0))[2] for o in flow.orders)
        verdict.note(f"flows_{flow.status.lower()}")
        if debits > 1:
            verdict.double_debits += 1
            verdict.example(f"double debit: {flow.request_id} {flow.flow_no} debits={debits}")
        if flow.status == "SUCCEEDED" and debits != 1:
            verdict.mismatches += 1
            verdict.example(f"SUCCEEDED with {debits} debits: {flow.request_id} {flow.flow_no}")
        if flow.status == "FAILED" and debits != 0:
            verdict.mismatches += 1
            verdict.example(f"FAILED with {debits} debits: {flow.request_id} {flow.flow_no}")
        if flow.status == "PROCESSING":
            if flow.needs_review:
                verdict.note("needs_review")
                verdict.note("needs_review_debited", int(debits > 0))
            else:
                verdict.stuck += 1
                verdict.example(f"stuck: {flow.request_id} {flow.flow_no} orders={','.join(flow.orders)}")
        _judge_events(verdict, flow, results.get(flow.flow_no, []))
    # Money that moved for an order number no flow knows about cannot be accounted for.
    for order_no, (channel, _status, debits) in orders.items():
        if order_no not in by_order and debits:
            verdict.mismatches += 1
            verdict.example(f"orphan debit on {channel}: order {order_no}")
    _judge_forgeries(verdict, forged, by_order, orders)
    for replay in replays:
        verdict.note("replays")
        if replay.replay_flow_no != replay.first_flow_no or not replay.replayed_flag:
            verdict.mismatches += 1
            verdict.example(
                f"replay of {replay.request_id} gave {replay.replay_flow_no} (first {replay.first_flow_no})"
            )
    verdict.note("event_duplicates_dropped", events.duplicates)
    verdict.note("events_unique", len(events.events))
    verdict.note("broker_incarnations", events.incarnations)
    verdict.note("unverified_broker_restarts", events.unverified_restarts)
    return verdict


def _judge_events(verdict: Verdict, flow: FlowView, results: list[Any]) -> None:
    if flow.status in TERMINAL and not results:
        verdict.lost_events += 1
        verdict.example(f"no result event: {flow.request_id} {flow.flow_no} {flow.status}")
    if len(results) > 1:
        # Two distinct event ids for one flow's result breaks "exactly one result event per flow".
        verdict.mismatches += 1
        verdict.example(f"{len(results)} result events for {flow.flow_no}")
    for event in results:
        if event.status != flow.status:
            verdict.mismatches += 1
            verdict.example(f"event {event.event_id} says {event.status}, flow {flow.flow_no} is {flow.status}")


def _judge_forgeries(
    verdict: Verdict,
    forged: Iterable[ForgedCallback],
    by_order: Mapping[str, FlowView],
    orders: Mapping[str, tuple[str, str, int]],
) -> None:
    followed: set[str] = set()
    for callback in forged:
        verdict.note("forged_sent")
        if callback.http_status is None:
            verdict.note("forged_undelivered")
            continue
        if 200 <= callback.http_status < 300:
            verdict.forged_accepted += 1
            verdict.example(f"forged callback for {callback.order_no} answered {callback.http_status}")
            continue
        flow = by_order.get(callback.order_no)
        if flow is None or flow.flow_no in followed:
            continue
        debits = sum(orders.get(o, ("", "", 0))[2] for o in flow.orders)
        truth = "SUCCEEDED" if debits else "FAILED"
        if flow.status == callback.claim and flow.status != truth and flow.status in TERMINAL:
            followed.add(flow.flow_no)
            verdict.forged_accepted += 1
            verdict.example(f"{flow.flow_no} followed a forged {callback.claim} (ledger: {truth})")
