"""The statement-format lookup: one map, adapters' formats under their adapter names, loud on unknown names."""

from __future__ import annotations

import pytest

from channels.contract import Channel, Operation
from channels.registry import ADAPTERS
from channels.statement import StatementFormat, UnknownStatementFormat
from channels.statements import FORMATS, GENERIC_CSV, adapter_format, parser_for, statement_format


def test_every_published_format_loads_under_its_own_name() -> None:
    assert set(FORMATS) == {"sandbox", "alipay", "wechatpay", GENERIC_CSV}
    for name in FORMATS:
        fmt = statement_format(name)
        assert isinstance(fmt, StatementFormat)
        assert fmt.name == name
        assert fmt.covers <= {Operation.WITHHOLD, Operation.PAYOUT, Operation.REFUND}
        assert parser_for(name) is fmt.iter_lines


def test_trade_bills_do_not_cover_payouts() -> None:
    assert Operation.PAYOUT not in statement_format("alipay").covers
    assert Operation.PAYOUT not in statement_format("wechatpay").covers
    assert Operation.PAYOUT in statement_format("sandbox").covers


def test_unknown_format_names_the_known_ones() -> None:
    with pytest.raises(UnknownStatementFormat) as caught:
        statement_format("swift-mt940")
    assert "generic-csv" in str(caught.value) and "alipay" in str(caught.value)


def test_adapter_format() -> None:
    assert adapter_format("alipay") == "alipay"
    assert adapter_format("nosuch") is None
    assert all(adapter_format(name) == name for name, entry in ADAPTERS.items() if entry.statement)


def test_the_channel_protocol_asks_for_statements() -> None:
    assert "fetch_statement" in dir(Channel)
    assert Operation("statement") is Operation.STATEMENT
