"""The reconciliation screen's rows (gateway/console/recon.py): amounts exact in yuan, sides absent shown as such."""

from __future__ import annotations

from datetime import date, datetime

from gateway.console.recon import item_row, run_row
from gateway.recon.model import ItemClass, ItemRow, Resolution, RunRow, RunStatus

AT = datetime(2026, 12, 1, 2, 0)


def run(totals: dict[str, object]) -> RunRow:
    return RunRow(
        id=7,
        channel="bank-a",
        day=date(2026, 12, 1),
        seq=1,
        trigger="schedule",
        operator="",
        status=RunStatus.SUCCEEDED,
        outcome="inconsistent",
        format="sandbox",
        source="download",
        sha256="",
        lines=3,
        matched=2,
        discrepancies=1,
        resolved=0,
        carried=0,
        totals=totals,
        error="",
        superseded_by=None,
        started_at=AT,
        finished_at=AT,
    )


def item(cls: ItemClass, **kw: object) -> ItemRow:
    fields: dict[str, object] = {
        "id": 1,
        "run_id": 7,
        "channel": "bank-a",
        "day": date(2026, 12, 1),
        "item_class": cls,
        "channel_order_no": "O1",
        "flow_no": "",
        "operation": "withhold",
        "local_status": "",
        "local_amount": None,
        "local_fee": None,
        "line_no": 1,
        "line_status": "SUCCEEDED",
        "line_amount": 12_345,
        "line_fee": 7,
        "line_txn_id": "T1",
        "resolution": Resolution.OPEN,
        "resolved_by": "",
        "resolution_reason": "",
        "resolved_at": None,
        "created_at": AT,
    }
    fields.update(kw)
    return ItemRow(**fields)  # type: ignore[arg-type]


def test_a_runs_totals_are_exact_yuan_by_kind_withholds_first() -> None:
    row = run(
        {
            "statement": {
                "refund": {"count": 1, "amount": 5, "fee": 0},
                "withhold": {"count": 3, "amount": 9_007_199_254_740_993, "fee": 11},
            },
            "local": {"withhold": {"count": 2, "amount": 30_050, "fee": 0}},
            "classes": {"channel_only": 1},
        }
    )
    shown = run_row(row)
    assert [k["kind"] for k in shown["kinds"]] == ["withhold", "refund"]  # "classes" is not a kind
    withhold = shown["kinds"][0]
    assert withhold["statement"] == {
        "count": 3,
        "amount": 9_007_199_254_740_993,
        "money": "90,071,992,547,409.93 CNY",  # past a float's 53 bits: exact
        "fee": "0.11 CNY",
    }
    assert withhold["local"]["money"] == "300.50 CNY"
    refund = shown["kinds"][1]
    assert refund["local"] == {"count": 0, "amount": 0, "money": "0.00 CNY", "fee": "0.00 CNY"}


def test_an_item_shows_a_missing_side_as_absent_and_flags_critical_classes() -> None:
    ghost = item_row(item(ItemClass.CHANNEL_ONLY))
    assert (ghost["critical"], ghost["open"], ghost["local_amount"], ghost["line_amount"], ghost["line_fee"]) == (
        True,
        True,
        "–",
        "123.45 CNY",
        "0.07 CNY",
    )
    fee = item_row(
        item(
            ItemClass.FEE_MISMATCH,
            local_status="SUCCEEDED",
            local_amount=100,
            resolution=Resolution.EXPLAINED,
            resolution_reason="bank fee change",
        )
    )
    assert (fee["critical"], fee["open"], fee["local_amount"], fee["reason"]) == (
        False,
        False,
        "1.00 CNY",
        "bank fee change",
    )
    lone = item_row(
        item(ItemClass.LOCAL_ONLY, local_status="SUCCEEDED", local_amount=1, line_status="", line_amount=None)
    )
    assert (lone["critical"], lone["line_amount"], lone["local_amount"]) == (True, "–", "0.01 CNY")
