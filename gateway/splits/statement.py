"""The settlement statement of one funder and business day (CSV, UTF-8 with BOM, bilingual headers).

Every small order of the day: each withhold part (with its flow, the withhold's amount, the
funder's part and what refunds have taken back of it so far) and each refund part; then the
totals, which are the settlement row's: withheld − refunded + carried in = net; paid is what
the payout paid (the statement total equals the payout); carried out goes to the next day.
Amounts are decimal strings of the currency's major unit, exact (no float); text a caller chose
(request ids) cannot run as a spreadsheet formula (:func:`gateway.domain.spreadsheet_safe`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from gateway.businessday import BusinessCalendar
from gateway.domain import minor_to_text, spreadsheet_safe
from gateway.store.splits import SettlementRow, StatementLine

HEADER = (
    "类型 kind",
    "流水号 flow_no",
    "原流水号 original_flow_no",
    "调用方 caller",
    "请求号 request_id",
    "订单金额 order_amount",
    "出资方金额 funder_amount",
    "已退回 refunded_so_far",
    "成功时间 succeeded_at",
)
KIND_TEXT = {"WITHHOLD": "代扣 WITHHOLD", "REFUND": "退款 REFUND"}


def filename(row: SettlementRow) -> str:
    return f"settlement-{row.funder_id}-{row.business_day:%Y%m%d}.csv"


def lines_total(lines: Sequence[StatementLine]) -> tuple[int, int]:
    """(withheld, refunded) of the lines: what the settlement row's totals must equal."""
    withheld = sum(line.part for line in lines if line.kind == "WITHHOLD")
    refunded = sum(line.part for line in lines if line.kind == "REFUND")
    return withheld, refunded


def render(row: SettlementRow, funder_name: str, lines: Sequence[StatementLine], calendar: BusinessCalendar) -> str:
    """The CSV text. Raises ValueError if the lines do not add up to the settlement row (never hand that out)."""
    withheld, refunded = lines_total(lines)
    if (withheld, refunded) != (row.withheld, row.refunded):
        raise ValueError(
            f"statement of {row.funder_id} {row.business_day}: lines total {withheld}/{refunded},"
            f" settlement {row.withheld}/{row.refunded}"
        )
    cur = row.currency
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("出资方 funder", row.funder_id, spreadsheet_safe(funder_name)))
    writer.writerow(("营业日 business_day", row.business_day.isoformat(), calendar.name))
    writer.writerow(("币种 currency", cur))
    writer.writerow(())
    writer.writerow(HEADER)
    for line in lines:
        local = calendar.local(line.succeeded_at).replace(tzinfo=None)
        writer.writerow(
            (
                KIND_TEXT[line.kind],
                line.flow_no,
                line.original_flow_no,
                spreadsheet_safe(line.caller),
                spreadsheet_safe(line.request_id),
                minor_to_text(line.flow_amount, cur),
                minor_to_text(line.part if line.kind == "WITHHOLD" else -line.part, cur),
                minor_to_text(line.refunded_so_far, cur) if line.kind == "WITHHOLD" else "",
                local.isoformat(sep=" ", timespec="seconds"),
            )
        )
    writer.writerow(())
    for label, value in (
        ("代扣笔数 orders", str(row.orders)),
        ("退款笔数 refund_orders", str(row.refund_orders)),
        ("代扣合计 withheld", minor_to_text(row.withheld, cur)),
        ("退款合计 refunded", minor_to_text(row.refunded, cur)),
        ("上日结转 carried_in", minor_to_text(row.carried_in, cur)),
        ("净额 net", minor_to_text(row.net, cur)),
        ("结算支付 paid", minor_to_text(row.paid, cur)),
        ("结转次日 carried_out", minor_to_text(row.carried_out, cur)),
        ("状态 status", row.status),
        ("代付流水 payout_flow_no", row.payout_flow_no),
    ):
        writer.writerow((label, value))
    return out.getvalue()
