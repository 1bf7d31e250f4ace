"""The reconciliation screen in real headless Chromium against a real gateway (MariaDB, a sandbox bank over
HTTP): a day of withholds is reconciled against the bank's statement, into which the simulator's fault
switch (``/_admin/statement/faults``) put a debit paygate never sent. The screen shows the run and that
discrepancy as the reconciliation API has them; a viewer's post and a post without the CSRF token are
refused; an operator marks it explained, audited and seen by the API. Screenshots go to tests/artifacts/console/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Page

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from paygate.v1 import gateway_pb2 as pb
from paygate.v1 import recon_pb2, recon_pb2_grpc
from tests.console.browser import Isolated, isolated_to, screenshot, signed_in
from tests.support.harness import OPERATOR_TOKEN, Harness, running_gateway
from tests.support.services import drop_db, new_db_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "console-recon-test-secret-0123456789abcdef"
VIEWER_TOKEN = "viewer-token-recon-0123456789abc"
GHOST = "GHOST-DEBIT-1"
GHOST_AMOUNT = 12_345  # 123.45 CNY
AMOUNTS = (10_000, 20_050)


@dataclass
class Stack:
    h: Harness
    base: str
    day: str
    run: recon_pb2.ReconRun
    card: str

    def recon(self) -> recon_pb2_grpc.ReconciliationStub:
        return recon_pb2_grpc.ReconciliationStub(self.h.channel)

    async def ghost(self) -> recon_pb2.ReconItem:
        listed = await self.recon().ListDiscrepancies(
            recon_pb2.ListReconDiscrepanciesRequest(run_id=self.run.id), metadata=self.h.op_md
        )
        [item] = [i for i in listed.items if i.channel_order_no == GHOST]
        return item

    async def marks(self) -> list[tuple[str, str, str, str]]:
        rows = await self.h.gateway.db.fetchall(
            "SELECT operator, action, target, reason FROM audit_log WHERE action = 'recon_mark' ORDER BY id"
        )
        return [(r["operator"], r["action"], r["target"], r["reason"]) for r in rows]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    db = new_db_config()
    operators = {
        "ops": {"token": OPERATOR_TOKEN, "role": "operator"},
        "watcher": {"token": VIEWER_TOKEN, "role": "viewer"},
    }
    console = {"enabled": True, "port": 0, "secret_key": SECRET}
    try:
        async with running_gateway(db, {"bank-a": Behaviour()}, console=console, operators=operators) as h:
            card = luhn_card()
            await h.bind_card(card, ["bank-a"])
            for i, amount in enumerate(AMOUNTS):
                flow = await h.stub.Withhold(
                    pb.WithholdRequest(
                        request_id=f"recon-console-{i}",
                        amount=pb.Money(amount=amount, currency="CNY"),
                        account_no=card,
                        bank_code="ICBC",
                        wait_ms=8000,
                    ),
                    metadata=h.md(),
                )
                assert flow.status == pb.SUCCEEDED
            sim = h.sims["bank-a"]
            day = sim.ledger.booking_day(sim.ledger.now()).isoformat()
            # the bank's statement lies once: a debit of an order paygate never sent
            async with aiohttp.ClientSession() as http:
                spec = {"extra": [{"day": day, "order_no": GHOST, "amount": GHOST_AMOUNT}]}
                async with http.post(f"{sim.base_url}/_admin/statement/faults", json=spec) as answer:
                    assert answer.status == 200, await answer.text()
            run = await recon_pb2_grpc.ReconciliationStub(h.channel).Run(
                recon_pb2.RunReconRequest(channel="bank-a", business_day=day, reason="the morning check"),
                metadata=h.op_md,
            )
            assert (run.status, run.outcome, run.discrepancies) == ("SUCCEEDED", "inconsistent", 1)
            yield Stack(h, f"http://127.0.0.1:{h.gateway.console_port}", day, run, card)
    finally:
        drop_db(db)


@pytest_asyncio.fixture(loop_scope="module")
async def isolated(browser: Any, stack: Stack) -> AsyncIterator[Isolated]:
    async with isolated_to(browser, stack.base) as context:
        yield context


async def item_row(page: Page, order_no: str) -> dict[str, str]:
    return dict(
        await page.eval_on_selector(
            f"#recon-items tr[data-order-no='{order_no}']",
            "tr => ({...tr.dataset, reason: tr.querySelector('td.reason').textContent})",
        )
    )


async def test_a_viewer_sees_the_run_and_its_discrepancy(isolated: Isolated, stack: Stack) -> None:
    page = await signed_in(isolated, VIEWER_TOKEN)
    await page.click("header nav a[href='/recon']")
    assert await page.inner_text("h1") == "渠道对账"
    await page.select_option("#recon-search select[name=channel]", "bank-a")
    await page.fill("#recon-search input[name=day]", stack.day)
    async with page.expect_navigation():
        await page.click("#recon-search button[type=submit]")
    run = stack.run
    row = page.locator(f"#recon-runs tr[data-run='{run.id}']")
    shown = await row.evaluate("tr => ({...tr.dataset})")
    assert shown == {
        "run": str(run.id),
        "channel": run.channel,
        "day": stack.day,
        "outcome": run.outcome,
        "discrepancies": str(run.discrepancies),
        "superseded": "no",
    }
    # both sides' withhold totals, as the API has them: the statement has the ghost debit on top of ours
    withhold = next(t for t in run.totals if t.kind == "withhold")
    assert (withhold.local_count, withhold.local_amount) == (len(AMOUNTS), sum(AMOUNTS))
    assert (withhold.statement_count, withhold.statement_amount) == (len(AMOUNTS) + 1, sum(AMOUNTS) + GHOST_AMOUNT)
    kind = await row.locator("tr[data-kind=withhold]").evaluate("tr => ({...tr.dataset})")
    assert kind == {
        "kind": "withhold",
        "statementCount": str(withhold.statement_count),
        "statementAmount": str(withhold.statement_amount),
        "localCount": str(withhold.local_count),
        "localAmount": str(withhold.local_amount),
    }
    text = await row.inner_text()
    assert "423.95 CNY" in text and "300.50 CNY" in text  # exactly in yuan, from minor units
    assert "不一致" in text
    async with page.expect_navigation():
        await row.locator("a.show").click()
    ghost = await stack.ghost()
    assert (getattr(ghost, "class"), ghost.critical, ghost.resolution) == ("channel_only", True, "OPEN")
    shown_item = await item_row(page, GHOST)
    assert shown_item == {
        "id": str(ghost.id),
        "class": "channel_only",
        "critical": "yes",
        "orderNo": GHOST,
        "lineStatus": ghost.line_status,
        "lineAmount": str(GHOST_AMOUNT),
        "localStatus": "",
        "resolution": "OPEN",
        "reason": "",
    }
    assert await page.locator("#recon-items tbody tr").count() == 1
    assert "123.45 CNY" in await page.inner_text(f"#recon-items tr[data-order-no='{GHOST}']")
    assert await page.locator("form.mark-form").count() == 0, "no mark form is offered to a viewer"
    assert stack.card not in await page.content()
    await screenshot(page, "recon")
    await page.goto(f"{stack.base}/recon?run={run.id}&lang=en")
    assert await page.inner_text("h1") == "Channel reconciliation"
    assert "channel only" in await page.inner_text("#recon-items")


async def test_a_viewer_cannot_mark_even_by_posting_the_form(isolated: Isolated, stack: Stack) -> None:
    page = await signed_in(isolated, VIEWER_TOKEN)
    await page.goto(f"{stack.base}/recon?run={stack.run.id}")
    ghost = await stack.ghost()
    csrf = await page.get_attribute("header form[action='/logout'] input[name=csrf]", "value")
    assert csrf
    answer = await page.evaluate(
        """async (fields) => {
          const r = await fetch('/recon/discrepancies/mark', {method: 'POST', body: new URLSearchParams(fields)});
          return {status: r.status, text: await r.text()};
        }""",
        {"csrf": csrf, "run": str(stack.run.id), "id": str(ghost.id), "resolution": "EXPLAINED", "reason": "viewer"},
    )
    assert answer["status"] == 403
    assert "只读" in answer["text"]
    assert (await stack.ghost()).resolution == "OPEN"
    assert await stack.marks() == []


async def test_a_mark_without_the_csrf_token_is_refused(isolated: Isolated, stack: Stack) -> None:
    page = await signed_in(isolated, OPERATOR_TOKEN)
    await page.goto(f"{stack.base}/recon?run={stack.run.id}")
    assert await page.locator("form.mark-form").count() == 1  # an operator is offered the form
    ghost = await stack.ghost()
    status = await page.evaluate(
        """async (fields) => (await fetch('/recon/discrepancies/mark',
             {method: 'POST', body: new URLSearchParams(fields)})).status""",
        {"run": str(stack.run.id), "id": str(ghost.id), "resolution": "EXPLAINED", "reason": "no token"},
    )
    assert status == 403
    assert (await stack.ghost()).resolution == "OPEN"
    assert await stack.marks() == []


async def test_an_operator_marks_the_discrepancy_explained(isolated: Isolated, stack: Stack) -> None:
    page = await signed_in(isolated, OPERATOR_TOKEN)
    await page.goto(f"{stack.base}/recon?run={stack.run.id}")
    ghost = await stack.ghost()
    reason = "银行测试订单 <b>known</b>"
    form = page.locator(f"#recon-items tr[data-order-no='{GHOST}'] form.mark-form")
    await form.locator("select[name=resolution]").select_option("EXPLAINED")
    await form.locator("input[name=reason]").fill(reason)
    async with page.expect_navigation():
        await form.locator("button").click()
    assert GHOST in await page.inner_text("#notice")
    shown = await item_row(page, GHOST)
    assert (shown["resolution"], shown["reason"]) == ("EXPLAINED", reason)  # shown as text, escaped
    assert await page.locator("#recon-items b").count() == 0
    assert await page.locator("form.mark-form").count() == 0  # marked once: no form any more
    assert await stack.marks() == [("ops", "recon_mark", f"recon_item:{ghost.id}", reason)]
    after = await stack.ghost()  # what the reconciliation API sees: the same item, the same change
    assert (after.resolution, after.resolved_by, after.resolution_reason) == ("EXPLAINED", "ops", reason)
    await screenshot(page, "recon_explained")
    # a second mark of the same item is refused by the use case, and said so
    ghost_id = str(ghost.id)
    csrf = await page.get_attribute("header form[action='/logout'] input[name=csrf]", "value")
    answer = await page.evaluate(
        """async (fields) => {
          const r = await fetch('/recon/discrepancies/mark', {method: 'POST', body: new URLSearchParams(fields)});
          return {status: r.status, text: await r.text()};
        }""",
        {"csrf": csrf, "run": str(stack.run.id), "id": ghost_id, "resolution": "RESOLVED", "reason": "twice"},
    )
    assert answer["status"] == 200  # the redirect back to the run, followed, with the use case's refusal
    assert "操作未完成" in answer["text"] and "already EXPLAINED" in answer["text"]
    assert len(await stack.marks()) == 1
    assert (await stack.ghost()).resolution == "EXPLAINED"
