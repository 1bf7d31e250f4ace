"""The relay's order check from the claim's ``earlier`` counts (no round trip of its own)."""

from __future__ import annotations

from gateway.store.outbox import OutboxRow, flows_held_elsewhere


def _row(row_id: int, flow_id: int, earlier: int) -> OutboxRow:
    return OutboxRow(row_id, f"e{row_id}", "FLOW_RESULT", flow_id, "loan", f"F{flow_id}", b"", earlier)


def test_a_flow_whose_earlier_events_are_all_claimed_is_not_held() -> None:
    rows = [_row(1, 7, 0), _row(2, 7, 1), _row(5, 7, 2), _row(3, 8, 0)]
    assert flows_held_elsewhere(rows) == set()


def test_an_earlier_event_outside_the_claim_holds_the_whole_flow() -> None:
    # Row 2's flow has one earlier unpublished event (another relay locked it): 7 waits, 8 goes.
    assert flows_held_elsewhere([_row(2, 7, 1), _row(3, 8, 0)]) == {7}


def test_a_gap_between_claimed_events_holds_the_flow() -> None:
    # Rows 1 and 9 of flow 7 claimed, but 9 has two earlier events: one of them is elsewhere.
    assert flows_held_elsewhere([_row(9, 7, 2), _row(1, 7, 0)]) == {7}


def test_no_rows_no_flows() -> None:
    assert flows_held_elsewhere([]) == set()
