"""Pure parts of settlement: which day a tick settles, the payout request id, the statement's own check, config."""

from __future__ import annotations

from datetime import date, datetime, time

import pytest

from gateway.businessday import BusinessCalendar
from gateway.config import ConfigError, from_mapping
from gateway.errors import InvalidInput
from gateway.splits.allocation import Share, ShareKind, Shares
from gateway.splits.funders import FunderConfig, Funders, SettlementConfig
from gateway.splits.requests import check_raw_shares
from gateway.splits.settlement import SettlementService, settlement_request_id
from gateway.splits.statement import render
from gateway.store.splits import SettlementRow, StatementLine

CAL = BusinessCalendar.named("Asia/Shanghai")


def service(settle_after: time = time(0, 30)) -> SettlementService:
    return SettlementService(
        store=None,  # type: ignore[arg-type]
        payouts=None,  # type: ignore[arg-type]
        funders=Funders({}),
        calendar=CAL,
        config=SettlementConfig(settle_after=settle_after),
        now=lambda: datetime(2026, 12, 2, 0, 0),
    )


def test_a_tick_settles_yesterday_once_past_settle_after_in_the_business_timezone() -> None:
    s = service()
    # 2026-12-02 00:20 in Shanghai is 2026-12-01 16:20 UTC: too early
    assert s.due_day(datetime(2026, 12, 1, 16, 20)) is None
    assert s.due_day(datetime(2026, 12, 1, 16, 30)) == date(2026, 12, 1)
    assert s.due_day(datetime(2026, 12, 2, 15, 59)) == date(2026, 12, 1)


def test_the_payout_request_id_is_derived_from_funder_and_day_only() -> None:
    assert settlement_request_id("xd", date(2026, 12, 1)) == "settle:xd:20261201"
    assert len(settlement_request_id("f" * 32, date(2026, 12, 1))) <= 64


def test_a_statement_whose_lines_do_not_add_up_is_never_rendered() -> None:
    row = SettlementRow("xd", date(2026, 12, 1), "CNY", 3000, 0, 0, 3000, 3000, 0, 1, 0, "PAID")
    line = StatementLine("WITHHOLD", "F1", "", "loans", "r1", 10001, 3000, 0, datetime(2026, 12, 1, 2, 0))
    text = render(row, "XD", [line], CAL)
    assert text.startswith("\ufeff") and "结算支付 paid,30.00" in text and "2026-12-01 10:00:00" in text
    with pytest.raises(ValueError, match="lines total"):
        render(row, "XD", [line, line], CAL)


def test_unknown_funders_and_other_currencies_are_refused_naming_the_field() -> None:
    funders = Funders({"xd": FunderConfig(name="XD"), "hk": FunderConfig(name="HK", currency="HKD")})
    shares = Shares(ShareKind.PPM, (Share("xd", 500_000), Share("nobody", 500_000)))
    with pytest.raises(InvalidInput) as err:
        funders.check(shares, "CNY")
    assert err.value.field == "shares[1].funder_id"
    with pytest.raises(InvalidInput) as err:
        funders.check(Shares(ShareKind.PPM, (Share("hk", 500_000), Share("xd", 500_000))), "CNY")
    assert err.value.field == "shares[0].funder_id"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ((("xd", 500_000, 5), ("b", 500_000, 0)), "shares[0]"),
        ((("xd", 500_000, 0), ("b", 0, 50)), "shares"),
        ((("XD", 500_000, 0), ("b", 500_000, 0)), "shares[0].funder_id"),
        ((("xd", 0, 0), ("b", 1_000_000, 0)), "shares[0]"),
    ],
)
def test_raw_shares_set_one_kind(raw: tuple[tuple[str, int, int], ...], field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_raw_shares(raw, 100)
    assert err.value.field == field


def test_funder_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"funders\.xd\.settle_from"):
        from_mapping(
            {
                "funders": {
                    "xd": {
                        "name": "XD",
                        "settle_from": "no-such-channel",
                        "payout_account": "62220200000001",
                        "account_name": "X",
                    }
                }
            }
        )
    with pytest.raises(ConfigError, match=r"funders\.XD"):
        from_mapping({"funders": {"XD": {"name": "XD"}}})
    with pytest.raises(ConfigError, match=r"settlement\.settle_after"):
        from_mapping({"settlement": {"settle_after": "25:00"}})
