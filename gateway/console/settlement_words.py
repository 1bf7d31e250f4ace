"""The words of the settlements screen (joint-loan funders), merged into :data:`gateway.console.i18n.MESSAGES`."""

from __future__ import annotations

WORDS: dict[str, dict[str, str]] = {
    "zh": {
        "nav.settlements": "出资方结算",
        "settlements.title": "联合贷出资方结算",
        "settlements.intro": "每个出资方每个营业日结算一次：当日成功的分账金额减去当日退款分账，加上前日结转的负数。",
        "settlements.none": "该营业日没有结算记录（营业日结束后由调度器结算）。",
        "settlements.day": "营业日",
        "settlements.funder": "出资方",
        "settlements.withheld": "代扣合计",
        "settlements.refunded": "退款合计",
        "settlements.carried_in": "上日结转",
        "settlements.net": "净额",
        "settlements.paid": "结算支付",
        "settlements.carried_out": "结转次日",
        "settlements.status": "状态",
        "settlements.orders": "笔数",
        "settlements.payout": "代付流水",
        "settlements.statement": "对账单",
        "settlements.download": "下载 CSV",
    },
    "en": {
        "nav.settlements": "Settlements",
        "settlements.title": "Joint-loan funder settlements",
        "settlements.intro": "Each funder is settled once per business day: the day's succeeded split parts minus"
        " its refunded parts, plus a negative net carried from the day before.",
        "settlements.none": "No settlement for this business day (the scheduler settles a day once it has ended).",
        "settlements.day": "Business day",
        "settlements.funder": "Funder",
        "settlements.withheld": "Withheld",
        "settlements.refunded": "Refunded",
        "settlements.carried_in": "Carried in",
        "settlements.net": "Net",
        "settlements.paid": "Paid",
        "settlements.carried_out": "Carried out",
        "settlements.status": "Status",
        "settlements.orders": "Orders",
        "settlements.payout": "Payout flow",
        "settlements.statement": "Statement",
        "settlements.download": "Download CSV",
    },
}
