"""The plans screen in real headless Chromium against a real gateway (MariaDB, sandbox bank over HTTP) whose
plan executor runs on a clock the test moves: the screen shows the run's instalments and time points as the
plan store has them, an operator pauses and resumes a time point (audited, seen by the PlanAdmin API), a
viewer is refused even when posting directly. Each test saves a screenshot under tests/artifacts/console/.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.plans.model import RunKey, RunStatus
from paygate.v1 import plans_pb2, plans_pb2_grpc
from tests.console.browser import Isolated, isolated_to, screenshot, sign_in
from tests.fakes.clock import FakeClock
from tests.support.harness import OPERATOR_TOKEN, Harness, running_gateway
from tests.support.plans import plan_pb
from tests.support.services import drop_db, new_db_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "console-plans-test-secret-0123456789abcdef"
VIEWER_TOKEN = "viewer-token-0123456789abcdef"
DAY = date(2026, 12, 1)
NOON = datetime(2026, 12, 1, 4, 1)  # 12:01 in Shanghai: the 12:00 time point has come, 18:00 not yet
KEY = RunKey("default", DAY, "12:00")
POLICY: dict[str, Any] = {
    "time_points": ["12:00", "18:00"],
    "attempts_per_day": 2,
    "retry_days": 1,
    "quiet_start": "22:00",
    "quiet_end": "07:00",
}


@dataclass
class Stack:
    h: Harness
    base: str
    cards: list[str]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    db = new_db_config()
    clock = FakeClock(datetime(2026, 12, 1, 0, 0))
    plans = {
        "enabled": False,  # the test steps the executor
        "concurrency": 8,
        "claim_batch": 8,
        "lease_s": 30.0,
        "wait_s": 5.0,
        "policies": {"default": POLICY},
        "products": {"cash-loan": "default"},
    }
    operators = {
        "ops": {"token": OPERATOR_TOKEN, "role": "operator"},
        "watcher": {"token": VIEWER_TOKEN, "role": "viewer"},
    }
    console = {"enabled": True, "port": 0, "secret_key": SECRET}
    try:
        async with running_gateway(
            db, {"bank-a": Behaviour()}, clock=clock, plans=plans, console=console, operators=operators
        ) as h:
            cards = [luhn_card() for _ in range(3)]
            for card in cards:
                await h.bind_card(card, ["bank-a"])
            stub = plans_pb2_grpc.WithholdingPlansStub(h.channel)
            reply = await stub.SubmitPlans(
                plans_pb2.SubmitPlansRequest(
                    plans=[
                        plan_pb(
                            "loan-a", cards[0], [("loan-a-1", "2026-12-01", 10_000), ("loan-a-2", "2027-01-01", 5_000)]
                        ),
                        plan_pb("loan-b", cards[1], [("loan-b-1", "2026-12-01", 10_100)]),
                        # ..01: the sandbox bank answers insufficient funds; retried at 18:00
                        plan_pb("loan-c", cards[2], [("loan-c-1", "2026-12-01", 20_001)]),
                    ]
                ),
                metadata=h.md(),
            )
            assert not reply.rejected, reply
            clock.set(NOON)
            assert h.gateway.executor is not None
            await h.gateway.executor.settle()
            yield Stack(h, f"http://127.0.0.1:{h.gateway.console_port}", cards)
    finally:
        drop_db(db)


@pytest_asyncio.fixture(loop_scope="module")
async def isolated(browser: Any, stack: Stack) -> AsyncIterator[Isolated]:
    async with isolated_to(browser, stack.base) as context:
        yield context


async def signed_in(isolated: Isolated, stack: Stack, token: str = OPERATOR_TOKEN) -> Page:
    page = await isolated.page()
    await sign_in(page, stack.base, token=token)
    return page


async def point_row(page: Page, time_point: str) -> dict[str, str]:
    return dict(
        await page.eval_on_selector(
            f"#time-points tr[data-time-point='{time_point}']",
            """tr => ({status: tr.dataset.status,
                       ...Object.fromEntries([...tr.querySelectorAll('td[data-k]')].map(td => [td.dataset.k,
                                                                                             td.firstChild.textContent.trim()]))})""",
        )
    )


async def test_the_plans_screen_shows_the_runs_instalments_and_progress(isolated: Isolated, stack: Stack) -> None:
    page = await signed_in(isolated, stack)
    await page.click("header nav a[href='/plans']")
    await page.wait_for_selector("#instalment-list")
    # the first visit lists instalments due from today (the executor's business day), as the store has them
    stored = await stack.h.gateway.db.fetchall(
        "SELECT instalment_id, status FROM instalments WHERE due_date >= %s ORDER BY due_date, id", (DAY,)
    )
    shown = await page.eval_on_selector_all(
        "#instalment-list tbody tr", "rows => rows.map(r => [r.dataset.instalmentId, r.dataset.status])"
    )
    assert shown == [[r["instalment_id"], r["status"]] for r in stored]
    assert dict(map(tuple, shown)) == {
        "loan-a-1": "SUCCEEDED",
        "loan-b-1": "SUCCEEDED",
        "loan-c-1": "SCHEDULED",  # insufficient funds: due again at 18:00
        "loan-a-2": "SCHEDULED",
    }
    content = await page.content()
    for card in stack.cards:
        assert card not in content and card[-4:] in content  # masked payers only
    # today's time points: the 12:00 run's counts are the plan store's
    progress = await stack.h.gateway.plans.progress(KEY)  # type: ignore[union-attr]
    noon = await point_row(page, "12:00")
    assert noon == {
        "status": progress.run.status.value,
        "due": str(progress.run.due),
        "queued": str(progress.remaining),
        "sent": str(progress.in_flight),
        "succeeded": str(progress.succeeded),
        "failed": str(sum(progress.failed.values())),
    }
    assert (progress.succeeded, progress.failed) == (2, {"INSUFFICIENT_FUNDS": 1})
    assert (await point_row(page, "18:00"))["status"] == ""  # not started; it has not come yet
    assert await page.locator("tr[data-time-point='18:00'] form").count() == 0
    await screenshot(page, "plans")
    # a search by plan id, then by status
    await page.fill("#instalment-search input[name=plan_id]", "loan-a")
    await page.fill("#instalment-search input[name=from]", "")
    async with page.expect_navigation():
        await page.click("#instalment-search button[type=submit]")
    ids = await page.eval_on_selector_all("#instalment-list tbody tr", "rows => rows.map(r => r.dataset.instalmentId)")
    assert ids == ["loan-a-1", "loan-a-2"]
    await page.goto(f"{stack.base}/plans?status=SUCCEEDED")
    ids = await page.eval_on_selector_all("#instalment-list tbody tr", "rows => rows.map(r => r.dataset.instalmentId)")
    assert ids == ["loan-a-1", "loan-b-1"]
    # over plain HTTP (as in the demo) the session cookie is not Secure, and it is HttpOnly and SameSite
    session = {c["name"]: c for c in await isolated.context.cookies()}["pg_console"]
    assert session["secure"] is False and session["httpOnly"] and session["sameSite"] == "Strict"


async def test_an_operator_pauses_and_resumes_a_time_point(isolated: Isolated, stack: Stack) -> None:
    page = await signed_in(isolated, stack)
    await page.goto(f"{stack.base}/plans?lang=en")
    form = page.locator("tr[data-time-point='12:00'] form[data-action='pause']")
    await form.locator("input[name=reason]").fill("bank asked for a pause")
    async with page.expect_navigation():
        await form.locator("button").click()
    assert "paused" in await page.inner_text("#notice")
    assert (await point_row(page, "12:00"))["status"] == "PAUSED"
    admin = plans_pb2_grpc.PlanAdminStub(stack.h.channel)
    request = plans_pb2.RunRequest(policy="default", business_day="2026-12-01", time_point="12:00")
    run = await admin.GetRun(request, metadata=(("authorization", f"Bearer {OPERATOR_TOKEN}"),))
    assert run.status == plans_pb2.RUN_PAUSED  # what the admin API sees: the same run, the same change
    await screenshot(page, "plans_paused")
    form = page.locator("tr[data-time-point='12:00'] form[data-action='resume']")
    await form.locator("input[name=reason]").fill("bank is back")
    async with page.expect_navigation():
        await form.locator("button").click()
    assert (await point_row(page, "12:00"))["status"] == RunStatus.RUNNING.value
    rows = await stack.h.gateway.db.fetchall(
        "SELECT operator, action, target, reason FROM audit_log WHERE target LIKE 'plan_run:%%' ORDER BY id"
    )
    assert [(r["operator"], r["action"], r["target"], r["reason"]) for r in rows][-2:] == [
        ("ops", "pause_plan_run", "plan_run:default/2026-12-01/12:00", "bank asked for a pause"),
        ("ops", "resume_plan_run", "plan_run:default/2026-12-01/12:00", "bank is back"),
    ]


async def test_a_viewer_cannot_act_on_plans_even_by_posting_the_form(isolated: Isolated, stack: Stack) -> None:
    page = await signed_in(isolated, stack, token=VIEWER_TOKEN)
    await page.goto(f"{stack.base}/plans")
    assert await page.locator("#time-points tr[data-time-point='12:00']").count() == 1
    assert await page.locator("form.run-form").count() == 0, "no action forms are offered to a viewer"
    before = (await stack.h.gateway.plans.get_run_row(KEY)).status  # type: ignore[union-attr]
    csrf = await page.get_attribute("header form[action='/logout'] input[name=csrf]", "value")
    assert csrf
    answers = await page.evaluate(
        """async (csrf) => {
          const fields = {csrf, policy: 'default', business_day: '2026-12-01', time_point: '12:00',
                          reason: 'viewer tries'};
          const out = [];
          for (const action of ['pause', 'resume', 'start']) {
            const r = await fetch('/plans/runs/' + action, {method: 'POST', body: new URLSearchParams(fields)});
            out.push({action, status: r.status, text: await r.text()});
          }
          return out;
        }""",
        csrf,
    )
    for answer in answers:
        assert answer["status"] == 403, answer["action"]
        assert "只读" in answer["text"]  # "your role (viewer) may not do this"
    assert (await stack.h.gateway.plans.get_run_row(KEY)).status is before  # type: ignore[union-attr]
    rows = await stack.h.gateway.db.fetchall("SELECT action FROM audit_log WHERE operator = 'watcher'")
    assert {r["action"] for r in rows} <= {"console_sign_in", "console_sign_out"}
    await screenshot(page, "plans_viewer")


async def test_a_plan_action_without_the_csrf_token_is_refused(isolated: Isolated, stack: Stack) -> None:
    page = await signed_in(isolated, stack)
    await page.goto(f"{stack.base}/plans")
    before = (await stack.h.gateway.plans.get_run_row(KEY)).status  # type: ignore[union-attr]
    status = await page.evaluate(
        """async () => (await fetch('/plans/runs/pause', {method: 'POST', body: new URLSearchParams(
             {policy: 'default', business_day: '2026-12-01', time_point: '12:00', reason: 'no token'})})).status"""
    )
    assert status == 403
    assert (await stack.h.gateway.plans.get_run_row(KEY)).status is before  # type: ignore[union-attr]
