"""The console in real headless Chromium against a real gateway (MariaDB, sandbox banks over HTTP, Kafka).

One browser and one gateway for the module (fast enough for ``make test``); each test opens its
own isolated browser context, which blocks and records any request that is not for the console,
and saves a screenshot under tests/artifacts/console/.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.businessday import BusinessCalendar
from gateway.results import ResultConsumer
from gateway.security.passwords import hash_password
from paygate.v1 import events_pb2
from paygate.v1 import gateway_pb2 as pb
from tests.console.browser import Isolated, isolated_to, screenshot, sign_in
from tests.support.harness import OPERATOR_TOKEN, Harness, running_gateway
from tests.support.services import drop_db, new_db_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOPIC = "console.flow-results"
SECRET = "console-browser-test-secret-0123456789abcdef"
VIEWER_TOKEN = "viewer-token-0123456789abcdef"
CHIEF_PASSWORD = "correct horse battery staple"
CHIEF_TOKEN = "chief-token-0123456789abcdef"
XSS = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
# every pending withhold settles only after an hour (never during the tests), and polling gives up within a
# second: review
SLOW = Behaviour(settle_after_ms=(3_600_000, 3_600_001))
POLLER = {"interval_s": 0.05, "first_delay_s": 0.1, "schedule": [[0.1, 3]]}


@dataclass
class Stack:
    h: Harness
    base: str
    card: str
    flows: dict[str, pb.Flow] = field(default_factory=dict)


def withhold(rid: str, card: str, amount: int, description: str = "loan repayment") -> pb.WithholdRequest:
    return pb.WithholdRequest(
        request_id=rid,
        amount=pb.Money(amount=amount, currency="CNY"),
        account_no=card,
        bank_code="ICBC",
        description=description,
    )


async def seed(h: Harness, card: str) -> dict[str, pb.Flow]:
    flows: dict[str, pb.Flow] = {}
    for i in range(6):
        flows[f"ok-{i}"] = await h.stub.Withhold(withhold(f"ok-{i}", card, 10_000 + i * 100), metadata=h.md())
    flows["declined"] = await h.stub.Withhold(withhold("declined", card, 12_301), metadata=h.md())
    flows["xss"] = await h.stub.Withhold(withhold("xss", card, 20_000, XSS), metadata=h.md())
    flows["review"] = await h.stub.Withhold(withhold("review", card, 10_005), metadata=h.md())
    for _ in range(100):
        got = await h.stub.GetFlow(pb.GetFlowRequest(request_id="review"), metadata=h.md())
        if got.needs_review:
            flows["review"] = got
            break
        await asyncio.sleep(0.1)
    assert flows["review"].needs_review, "the pending withhold should have gone to review"
    return flows


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(kafka_broker: Any) -> AsyncIterator[Stack]:
    db = new_db_config()
    kafka = {
        "bootstrap_servers": kafka_broker.bootstrap,
        "default_topic": TOPIC,
        "enable_idempotence": False,
        "create_topics": True,
        "topic_partitions": 1,
        "topic_replication_factor": 1,
    }
    console = {"enabled": True, "port": 0, "secret_key": SECRET}
    operators = {
        "ops": {"token": OPERATOR_TOKEN, "role": "operator"},
        "watcher": {"token": VIEWER_TOKEN, "role": "viewer"},
        "chief": {"password_hash": hash_password(CHIEF_PASSWORD), "role": "approver", "token": CHIEF_TOKEN},
    }
    try:
        async with running_gateway(
            db, {"bank-a": SLOW, "bank-b": SLOW}, poller=POLLER, kafka=kafka, console=console, operators=operators
        ) as h:
            card = luhn_card()
            await h.bind_card(card, ["bank-a", "bank-b"])
            flows = await seed(h, card)
            yield Stack(h, f"http://127.0.0.1:{h.gateway.console_port}", card, flows)
    finally:
        drop_db(db)


@pytest_asyncio.fixture(loop_scope="module")
async def isolated(browser: Any, stack: Stack) -> AsyncIterator[Isolated]:
    async with isolated_to(browser, stack.base) as context:
        yield context


async def operator_page(isolated: Isolated, stack: Stack, token: str = OPERATOR_TOKEN) -> Page:
    page = await isolated.page()
    await sign_in(page, stack.base, token=token)
    return page


async def test_sign_in_and_out(isolated: Isolated, stack: Stack) -> None:
    page = await isolated.page()
    await page.goto(f"{stack.base}/flows")
    assert "/login" in page.url  # no session: the sign-in form, which comes back to the page asked for
    await page.fill("input[name=token]", "not-the-token-at-all-0000")
    await page.click("#sign-in button[type=submit]")
    assert "/login" in page.url and await page.is_visible("#sign-in-error")
    await page.fill("input[name=token]", OPERATOR_TOKEN)
    async with page.expect_navigation():
        await page.click("#sign-in button[type=submit]")
    assert page.url.endswith("/flows")
    assert await page.get_attribute("#whoami", "data-operator") == "ops"
    await screenshot(page, "sign_in")
    cookies = {c["name"]: c for c in await isolated.context.cookies()}
    session = cookies["pg_console"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert OPERATOR_TOKEN not in json.dumps(cookies) and OPERATOR_TOKEN not in await page.content()
    async with page.expect_navigation():
        await page.click("header form[action='/logout'] button")
    await page.goto(f"{stack.base}/")
    assert "/login" in page.url


async def test_search_by_request_id_and_open_the_timeline(isolated: Isolated, stack: Stack) -> None:
    page = await operator_page(isolated, stack)
    await page.goto(f"{stack.base}/flows")
    await page.fill("#flow-search input[name=request_id]", "declined")
    async with page.expect_navigation():
        await page.click("#flow-search button[type=submit]")
    rows = page.locator("#flow-list tbody tr")
    assert await rows.count() == 1
    flow_no = stack.flows["declined"].flow_no
    assert await rows.first.get_attribute("data-flow-no") == flow_no
    text = await rows.first.inner_text()
    assert stack.card not in text and stack.card[-4:] in text  # masked account only
    await screenshot(page, "flow_search")
    async with page.expect_navigation():
        await page.click(f"#flow-list a[href='/flows/{flow_no}']")
    assert await page.inner_text("#flow-no") == flow_no
    kinds = await page.eval_on_selector_all("#timeline li", "items => items.map(li => li.dataset.kind)")
    assert kinds[0] == "created" and "attempt" in kinds and "decision" in kinds and "answer" in kinds
    assert kinds[-2:] == ["finished", "event"] or "finished" in kinds
    timeline = await page.inner_text("#timeline")
    assert "INSUFFICIENT_FUNDS" in timeline or "FUNDS" in timeline.upper()
    assert "bank-a" in timeline or "bank-b" in timeline
    assert "FLOW_RESULT" in timeline
    assert stack.card not in await page.content()
    await screenshot(page, "flow_timeline")


async def test_injected_script_is_shown_as_text(isolated: Isolated, stack: Stack) -> None:
    page = await operator_page(isolated, stack)
    flow_no = stack.flows["xss"].flow_no
    await page.goto(f"{stack.base}/flows/{flow_no}")
    assert await page.inner_text("#flow-description") == XSS
    await page.goto(f"{stack.base}/flows?request_id=xss")
    assert XSS in await page.inner_text("#flow-list")
    assert await page.evaluate("window.__pwned === undefined")
    assert await page.locator("#flow-list img").count() == 0
    await screenshot(page, "xss_as_text")


async def test_overview_charts_show_the_runs_data(isolated: Isolated, stack: Stack) -> None:
    rows = await stack.h.gateway.db.fetchall("SELECT status, created_at FROM flows")
    calendar = BusinessCalendar.named("Asia/Shanghai")
    today = calendar.today()
    expected = {
        s: sum(1 for r in rows if r["status"] == s and calendar.day_of(r["created_at"]) == today)
        for s in ("PROCESSING", "SUCCEEDED", "FAILED")
    }
    assert expected["SUCCEEDED"] >= 7 and expected["FAILED"] >= 1
    page = await operator_page(isolated, stack)
    await page.goto(f"{stack.base}/")
    await page.wait_for_function("window.paygateConsole && window.paygateConsole.ready")
    drawn = await page.evaluate(
        """() => {
          const chart = window.paygateConsole.charts.trend;
          const option = chart.instance.getOption();
          return {
            error: chart.error,
            days: option.xAxis[0].data,
            series: option.series.map(s => ({name: s.name, data: s.data})),
            canvas: !!document.querySelector('#trend-chart canvas'),
          };
        }"""
    )
    assert drawn["error"] is None and drawn["canvas"] and len(drawn["days"]) == 7
    names = ["处理中", "成功", "失败"]
    by_name = {s["name"]: s["data"] for s in drawn["series"]}
    for status, name in zip(("PROCESSING", "SUCCEEDED", "FAILED"), names, strict=True):
        assert by_name[name][-1] == expected[status], (status, by_name)
        assert by_name[name][:-1] == [0] * 6
    rates = await page.evaluate("window.paygateConsole.charts.rates.instance.getOption().series[1].data")
    assert any(r is not None and r > 0 for r in rates)
    totals = await page.inner_text("#totals tbody tr[data-kind=WITHHOLD][data-status=SUCCEEDED] td.count")
    assert int(totals) == expected["SUCCEEDED"]
    assert await page.inner_text("#review-backlog") == "1"
    assert isolated.blocked == []
    assert any("/static/vendor/echarts.min.js" in url for url in isolated.served)
    await screenshot(page, "overview")


async def test_english_pages(isolated: Isolated, stack: Stack) -> None:
    page = await operator_page(isolated, stack)
    await page.goto(f"{stack.base}/channels?lang=en")
    assert "Channels" in await page.inner_text("main h1")
    await page.goto(f"{stack.base}/review")  # the choice is kept
    assert "Review queue" in await page.inner_text("main h1")
    await screenshot(page, "review_queue_en")
    await page.goto(f"{stack.base}/?lang=zh")


async def test_request_without_csrf_token_is_refused(isolated: Isolated, stack: Stack) -> None:
    page = await operator_page(isolated, stack)
    await page.goto(f"{stack.base}/channels")
    answer = await page.evaluate(
        """async () => {
          const r = await fetch('/channels/bank-b/state', {method: 'POST',
            headers: {'Content-Type': 'application/x-www-form-urlencoded'},
            body: new URLSearchParams({state: 'disabled', reason: 'no token'})});
          return {status: r.status, text: await r.text()};
        }"""
    )
    assert answer["status"] == 403
    states = await stack.h.gateway.db.fetchall("SELECT channel, state FROM channel_states")
    assert states == []
    assert await stack.h.gateway.db.fetchall("SELECT * FROM audit_log WHERE action='set_channel_state'") == []
    await page.goto(f"{stack.base}/channels")
    assert await page.get_attribute("#channel-bank-b", "data-state") == "enabled"
    await screenshot(page, "csrf_refused")


async def test_resolve_a_flow_in_review_event_and_audit(isolated: Isolated, stack: Stack) -> None:
    flow_no = stack.flows["review"].flow_no
    page = await operator_page(isolated, stack)
    await page.goto(f"{stack.base}/review")
    card = page.locator(f".review-item[data-flow-no='{flow_no}']")
    assert await card.count() == 1
    await card.locator("select[name=status]").select_option("SUCCEEDED")
    await card.locator("input[name=channel_txn_id]").fill("BANK-TXN-881")
    await card.locator("input[name=reason]").fill("bank statement shows the debit")
    await screenshot(page, "review_before_resolve")
    async with page.expect_navigation():
        await card.locator("form.resolve button[type=submit]").click()
    assert flow_no in await page.inner_text("#notice")
    got = await stack.h.stub.GetFlow(pb.GetFlowRequest(flow_no=flow_no), metadata=stack.h.md())
    assert got.status == pb.SUCCEEDED and not got.needs_review
    event = await result_event(stack, flow_no)
    assert event.status == pb.SUCCEEDED and event.channel_txn_id == "BANK-TXN-881"
    await page.goto(f"{stack.base}/audit?target={flow_no}")
    row = page.locator("#audit-list tbody tr[data-action=resolve_flow]")
    assert await row.count() == 1
    assert "ops" in await row.inner_text() and "bank statement shows the debit" in await row.inner_text()
    await page.goto(f"{stack.base}/flows/{flow_no}")
    assert await page.get_attribute("#flow-status", "data-status") == "SUCCEEDED"
    assert "resolve_flow" in await page.inner_text("#timeline")
    await screenshot(page, "resolved_timeline")


async def result_event(stack: Stack, flow_no: str) -> events_pb2.FlowEvent:
    bootstrap = stack.h.gateway.config.kafka.bootstrap_servers  # type: ignore[union-attr]
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        consumer = ResultConsumer(bootstrap, [TOPIC], from_beginning=True, idle_timeout_s=2.0)
        try:
            async for event in consumer:
                if event.flow_no == flow_no and event.event_type == events_pb2.FLOW_RESULT:
                    return event
        finally:
            await consumer.stop()
    raise AssertionError(f"no FLOW_RESULT event for {flow_no} on {TOPIC}")


async def test_disable_a_channel_and_the_next_withhold_goes_elsewhere(isolated: Isolated, stack: Stack) -> None:
    page = await operator_page(isolated, stack)
    await page.goto(f"{stack.base}/channels")
    form = page.locator("#channel-bank-a form.state-form")
    await form.locator("select[name=state]").select_option("disabled")
    await form.locator("input[name=reason]").fill("incident 42: bank-a timing out")
    async with page.expect_navigation():
        await form.locator("button[type=submit]").click()
    assert await page.get_attribute("#channel-bank-a", "data-state") == "disabled"
    await screenshot(page, "channel_disabled")
    try:
        for i in range(4):
            flow = await stack.h.stub.Withhold(
                withhold(f"after-disable-{i}", stack.card, 30_000 + i * 100), metadata=stack.h.md()
            )
            assert flow.status == pb.SUCCEEDED
            assert [a.channel for a in flow.attempts] == ["bank-b"]
        row = await stack.h.gateway.db.fetchone(
            "SELECT a.decision FROM attempts a JOIN flows f ON f.id = a.flow_id WHERE f.request_id = 'after-disable-0'"
        )
        decision = json.loads(row["decision"])
        assert {"channel_id": "bank-a", "filter": "state"}.items() <= next(
            r for r in decision["rejected"] if r["channel_id"] == "bank-a"
        ).items()
    finally:
        await stack.h.gateway.operations().set_channel_state("bank-a", _enabled(), "test", "restore")


def _enabled() -> Any:
    from routing.engine import ChannelState

    return ChannelState.ENABLED


async def test_no_request_leaves_the_gateway(isolated: Isolated, stack: Stack) -> None:
    page = await operator_page(isolated, stack)
    for path in ("/", "/flows", f"/flows/{stack.flows['ok-0'].flow_no}", "/review", "/channels", "/outbox", "/audit"):
        await page.goto(f"{stack.base}{path}")
        await page.wait_for_load_state("networkidle")
    assert isolated.blocked == []
    hosts = {re.sub(r"^https?://([^/]+)/.*$", r"\1", url) for url in isolated.served}
    assert hosts == {stack.base.removeprefix("http://")}
    await screenshot(page, "outbox")


async def test_sign_in_with_a_password(isolated: Isolated, stack: Stack) -> None:
    page = await isolated.page()
    await page.goto(f"{stack.base}/")
    await page.fill("input[name=name]", "chief")
    await page.fill("input[name=password]", "not the password")
    await page.click("#sign-in button[type=submit]")
    assert await page.is_visible("#sign-in-error")
    await page.fill("input[name=password]", CHIEF_PASSWORD)
    async with page.expect_navigation():
        await page.click("#sign-in button[type=submit]")
    assert await page.get_attribute("#whoami", "data-role") == "approver"
    await screenshot(page, "password_sign_in")


async def test_a_viewer_cannot_act_even_by_posting_the_form(isolated: Isolated, stack: Stack) -> None:
    page = await operator_page(isolated, stack, token=VIEWER_TOKEN)
    assert await page.get_attribute("#whoami", "data-role") == "viewer"
    await page.goto(f"{stack.base}/channels")
    assert await page.locator("form.state-form").count() == 0, "no action forms are offered to a viewer"
    await page.goto(f"{stack.base}/review")
    assert await page.locator("form.resolve").count() == 0
    csrf = await page.get_attribute("header form[action='/logout'] input[name=csrf]", "value")
    assert csrf
    review_flow = stack.flows["ok-1"].flow_no
    answers = await page.evaluate(
        """async ([csrf, flowNo]) => {
          const post = async (path, fields) => {
            const r = await fetch(path, {method: 'POST', body: new URLSearchParams({csrf, ...fields})});
            return {path, status: r.status, text: await r.text()};
          };
          return [
            await post('/channels/bank-b/state', {state: 'disabled', reason: 'viewer tries'}),
            await post('/review/' + flowNo + '/resolve', {status: 'FAILED', reason: 'viewer tries'}),
            await post('/review/' + flowNo + '/requery', {}),
            await post('/outbox/release', {id: '1', reason: 'viewer tries'}),
            await post('/resolutions/1/approve', {reason: 'viewer tries'}),
          ];
        }""",
        [csrf, review_flow],
    )
    for answer in answers:
        assert answer["status"] == 403, answer["path"]
        assert "只读" in answer["text"]  # "your role (viewer) may not do this"
    rows = await stack.h.gateway.db.fetchall("SELECT action FROM audit_log WHERE operator = 'watcher'")
    assert {r["action"] for r in rows} <= {"console_sign_in", "console_sign_out"}
    assert await stack.h.gateway.db.fetchall("SELECT * FROM channel_states WHERE channel = 'bank-b'") == []
    await page.goto(f"{stack.base}/channels")
    await screenshot(page, "viewer_channels")
