"""The settlements screen in real headless Chromium: a viewer sees each funder's day and downloads its statement;
an operator re-sends a payout the bank refused from its row.

A real gateway (MariaDB, a sandbox bank over HTTP) settles a day of joint-loan withholds and a
refund; the screen reads through the settlement use case, as the admin API does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page, async_playwright

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.businessday import BusinessCalendar
from paygate.v1 import gateway_pb2 as pb
from tests.console.browser import Isolated, launch, screenshot, sign_in
from tests.fakes.clock import FakeClock
from tests.integration.test_settlement_resend import audits, failed_day
from tests.support.harness import OPERATOR_TOKEN, running_gateway
from tests.support.services import drop_db, new_db_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "console-settlements-test-secret-0123456789"
VIEWER_TOKEN = "viewer-token-settlements-0123456789"
CAL = BusinessCalendar.named("Asia/Shanghai")
FUNDERS = {
    "xd": {"name": "某某小额贷款", "payout_account": "6222020000000301", "account_name": "XD", "settle_from": "bank-a"},
    "bank": {"name": "某某银行", "payout_account": "6222020000000702", "account_name": "Bank", "settle_from": "bank-a"},
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def settled() -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    db = new_db_config()
    clock = FakeClock(datetime.now(UTC).replace(tzinfo=None))
    operators = {
        "ops": {"token": OPERATOR_TOKEN, "role": "operator"},
        "watcher": {"token": VIEWER_TOKEN, "role": "viewer"},
    }
    try:
        async with running_gateway(
            db,
            {"bank-a": Behaviour(magic=False)},
            clock=clock,
            console={"enabled": True, "port": 0, "secret_key": SECRET},
            operators=operators,
            funders=FUNDERS,
            settlement={"enabled": False, "lookback_days": 0},
        ) as h:
            card = luhn_card()
            await h.bind_card(card, ["bank-a"])
            shares = [pb.FunderShare(funder_id="xd", ppm=300_000), pb.FunderShare(funder_id="bank", ppm=700_000)]
            repay = await h.stub.Withhold(
                pb.WithholdRequest(
                    request_id="joint-1",
                    amount=pb.Money(amount=10_001, currency="CNY"),
                    account_no=card,
                    bank_code="ICBC",
                    shares=shares,
                    wait_ms=8000,
                ),
                metadata=h.md(),
            )
            refund = await h.stub.Refund(
                pb.RefundRequest(
                    request_id="joint-1-r",
                    original_flow_no=repay.flow_no,
                    amount=pb.Money(amount=5_000, currency="CNY"),
                    reason="overpaid",
                    wait_ms=8000,
                ),
                metadata=h.md(),
            )
            assert refund.status == pb.SUCCEEDED
            day = CAL.today(datetime.now(UTC))
            clock.set(CAL.at(day + timedelta(days=1), time(1, 0)))
            rows = {r.funder_id: r for r in await h.gateway.settlement.settle_through(day)}
            assert (rows["xd"].paid, rows["bank"].paid) == (1500, 3501)
            yield (
                f"http://127.0.0.1:{h.gateway.console_port}",
                day.isoformat(),
                {"repay": repay.flow_no, "refund": refund.flow_no, "payout": rows["bank"].payout_flow_no},
            )
    finally:
        drop_db(db)


@asynccontextmanager
async def signed_in_page(base: str, token: str) -> AsyncIterator[tuple[Isolated, Page]]:
    """Headless Chromium, one isolated page signed in to the console at ``base`` with ``token``."""
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        try:
            isolated = await Isolated.open(browser, base)
            page = await isolated.page()
            await sign_in(page, base, token=token)
            yield isolated, page
        finally:
            await browser.close()


async def test_a_viewer_sees_each_funders_day_and_downloads_its_statement(
    settled: tuple[str, str, dict[str, Any]],
) -> None:
    base, day, flows = settled
    async with signed_in_page(base, VIEWER_TOKEN) as (isolated, page):
        await page.click("nav a[href='/settlements']")
        assert await page.inner_text("h1") == "联合贷出资方结算"
        await page.fill("input[name=day]", day)
        async with page.expect_navigation():
            await page.click("#settlements-search button[type=submit]")
        rows = page.locator("#settlement-list tbody tr")
        assert await rows.count() == 2
        bank = page.locator("#settlement-list tr[data-funder=bank]")
        assert await bank.get_attribute("data-paid") == "3501"
        assert await bank.get_attribute("data-status") == "PAID"
        assert flows["payout"] in await bank.inner_text()
        await screenshot(page, "settlements")
        async with page.expect_download() as info:
            await bank.locator("a.statement").click()
        download = await info.value
        assert download.suggested_filename == f"settlement-bank-{day.replace('-', '')}.csv"
        text = open(await download.path(), encoding="utf-8-sig").read()
        assert flows["repay"] in text and flows["refund"] in text
        assert "结算支付 paid,35.01" in text and "出资方金额 funder_amount" in text
        # English too
        await page.goto(f"{base}/settlements?day={day}&lang=en")
        assert await page.inner_text("h1") == "Joint-loan funder settlements"
        assert isolated.blocked == [], isolated.blocked
        await isolated.close()


async def test_an_operator_re_sends_a_failed_payout_from_its_row() -> None:
    db = new_db_config("settle29")
    try:
        async with failed_day(db) as (h, day):
            h.sims["bank-a"].behaviour.update({"declines": {}})
            base = f"http://127.0.0.1:{h.gateway.console_port}"
            async with signed_in_page(base, OPERATOR_TOKEN) as (isolated, page):
                await page.goto(f"{base}/settlements?day={day.isoformat()}")
                assert await page.locator("form.resend-form").count() == 2  # both funders' payouts failed
                form = page.locator("#settlement-list tr[data-funder=xd] form.resend-form")
                await form.locator("input[name=reason]").fill("账户已解冻 unfrozen")
                async with page.expect_navigation():
                    await form.locator("button").click()
                assert f"settle:xd:{day:%Y%m%d}:r1" in await page.inner_text("#notice")
                xd = page.locator("#settlement-list tr[data-funder=xd]")
                assert await xd.get_attribute("data-status") == "PAID"
                assert await page.locator("form.resend-form").count() == 1  # only the bank's row now
                await screenshot(page, "settlements_resent")
                assert isolated.blocked == [], isolated.blocked
                await isolated.close()
            assert h.sims["bank-a"].ledger.balance("6222020000000301") == 3000
            assert [(a["operator"], a["reason"]) for a in await audits(h)] == [("ops", "账户已解冻 unfrozen")]
    finally:
        drop_db(db)
