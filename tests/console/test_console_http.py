"""The console over HTTP against a real gateway on MariaDB with sandbox banks: what every answer carries,
what is refused, and what never reaches the browser."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from yarl import URL

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.console.server import CSP
from gateway.console.sessions import COOKIE, Session, SessionSigner
from gateway.errors import QueryTooBroad
from gateway.store.console_queries import MySQLConsoleQueries
from paygate.v1 import gateway_pb2 as pb
from tests.support.harness import CALLER_TOKENS, OPERATOR_TOKEN, Harness, running_gateway
from tests.support.services import drop_db, new_db_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "console-http-test-secret-0123456789abcdef"
HASH_KEY = "paygate-dev-only-change-me"


@dataclass
class Stack:
    h: Harness
    base: str
    card: str
    flow_no: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    db = new_db_config()
    try:
        async with running_gateway(
            db,
            {"bank-a": Behaviour(), "bank-b": Behaviour()},
            console={"enabled": True, "port": 0, "secret_key": SECRET},
        ) as h:
            card = luhn_card()
            await h.bind_card(card, ["bank-a", "bank-b"])
            flow = await h.stub.Withhold(
                pb.WithholdRequest(
                    request_id="http-1",
                    amount=pb.Money(amount=12_300, currency="CNY"),
                    account_no=card,
                    bank_code="ICBC",
                    description='=HYPERLINK("http://evil.example")',
                ),
                metadata=h.md(),
            )
            yield Stack(h, f"http://127.0.0.1:{h.gateway.console_port}", card, flow.flow_no)
    finally:
        drop_db(db)


def client() -> aiohttp.ClientSession:
    # the cookie jar must accept cookies from an IP address (127.0.0.1)
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(
    session: aiohttp.ClientSession, base: str, token: str = OPERATOR_TOKEN, **extra: str
) -> aiohttp.ClientResponse:
    form = await (await session.get(f"{base}/login")).text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    return await session.post(f"{base}/login", data={"csrf": csrf.group(1), "token": token, **extra})


async def csrf_of(session: aiohttp.ClientSession, base: str, path: str = "/channels") -> str:
    page = await (await session.get(f"{base}{path}")).text()
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


async def state_rows(stack: Stack) -> list[dict[str, Any]]:
    """What operators have set for bank-a (the channel the refused changes aim at)."""
    return await stack.h.gateway.db.fetchall("SELECT channel, state FROM channel_states WHERE channel = 'bank-a'")


async def test_every_answer_carries_the_security_headers(stack: Stack) -> None:
    async with client() as s:
        await sign_in(s, stack.base)
        for path, status in (
            ("/", 200),
            ("/flows", 200),
            (f"/flows/{stack.flow_no}", 200),
            ("/flows/BAD", 400),
            ("/flows/01AAAAAAAAAAAAAAAAAAAAAAAA", 404),
            ("/no-such-page", 404),
            ("/login", 200),
        ):
            r = await s.get(f"{stack.base}{path}", allow_redirects=False)
            assert r.status == status, path
            assert r.headers["Content-Security-Policy"] == CSP
            assert "'unsafe-inline'" not in CSP and "unsafe-eval" not in CSP and "frame-ancestors 'none'" in CSP
            assert r.headers["X-Frame-Options"] == "DENY"
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Cache-Control"] == "no-store", path
        static = await s.get(f"{stack.base}/static/console.js")
        assert static.status == 200 and static.headers["Cache-Control"].startswith("private")
        assert static.headers["X-Content-Type-Options"] == "nosniff"
        csv_answer = await s.get(f"{stack.base}/flows.csv")
        assert (
            csv_answer.headers["Cache-Control"] == "no-store"
            and csv_answer.headers["X-Content-Type-Options"] == "nosniff"
        )


async def test_no_session_no_page_and_no_change(stack: Stack) -> None:
    async with client() as s:
        r = await s.get(f"{stack.base}/flows?status=FAILED", allow_redirects=False)
        assert r.status == 303 and URL(r.headers["Location"]).path == "/login"
        assert URL(r.headers["Location"]).query["next"] == "/flows?status=FAILED"
        r = await s.post(f"{stack.base}/channels/bank-a/state", data={"state": "disabled", "reason": "x"})
        assert r.status == 401
        s.cookie_jar.update_cookies({COOKIE: "forged.cookie"})
        r = await s.get(f"{stack.base}/", allow_redirects=False)
        assert r.status == 303 and "expired=1" in r.headers["Location"]
    assert await state_rows(stack) == []


async def test_an_expired_or_foreign_session_is_refused(stack: Stack) -> None:
    import time

    old = SessionSigner(SECRET, lifetime_s=43200, idle_s=1800, clock=lambda: time.time() - 3600)
    table = stack.h.gateway.config.operators["ops"]
    assert table.token is not None
    ops = table.token.reveal()
    stale = old.encode(old.issue("ops", f"{ops}\n"))
    other = SessionSigner("another-secret-key-0123456789abcdef00", lifetime_s=43200, idle_s=1800)
    foreign = other.encode(other.issue("ops", f"{ops}\n"))
    fresh = SessionSigner(SECRET, lifetime_s=43200, idle_s=1800)
    wrong_credential = fresh.encode(Session("ops", "sid", time.time(), time.time(), fresh.fingerprint("old-token\n")))
    for cookie in (stale, foreign, wrong_credential):
        async with client() as s:
            s.cookie_jar.update_cookies({COOKIE: cookie})
            r = await s.get(f"{stack.base}/", allow_redirects=False)
            assert r.status == 303 and r.headers["Location"].startswith("/login"), cookie
    async with client() as s:  # the same key on another replica: the session is good there too
        s.cookie_jar.update_cookies({COOKIE: fresh.encode(fresh.issue("ops", f"{ops}\n"))})
        assert (await s.get(f"{stack.base}/", allow_redirects=False)).status == 200


@pytest.mark.parametrize(
    ("token", "headers"),
    [
        ("", {}),
        ("forged-token", {}),
        ("VALID", {"Origin": "http://evil.example"}),
        ("VALID", {"Sec-Fetch-Site": "cross-site"}),
    ],
)
async def test_a_change_without_the_sessions_csrf_token_is_refused(
    stack: Stack, token: str, headers: dict[str, str]
) -> None:
    async with client() as s:
        await sign_in(s, stack.base)
        real = await csrf_of(s, stack.base)
        data = {
            "state": "disabled",
            "reason": "csrf probe",
            **({"csrf": real if token == "VALID" else token} if token else {}),
        }
        r = await s.post(f"{stack.base}/channels/bank-a/state", data=data, headers=headers, allow_redirects=False)
        assert r.status == 403
        assert "csrf" in (await r.text()).lower() or "其他站点" in await r.text()
    assert await state_rows(stack) == []


async def test_with_the_token_the_change_is_made_and_audited(stack: Stack) -> None:
    async with client() as s:
        await sign_in(s, stack.base)
        token = await csrf_of(s, stack.base)
        r = await s.post(
            f"{stack.base}/channels/bank-b/state",
            data={"csrf": token, "state": "draining", "reason": "maintenance at 02:00"},
            allow_redirects=False,
        )
        assert r.status == 303 and r.headers["Location"] == "/channels"
        page = await (await s.get(f"{stack.base}/channels")).text()
        assert 'data-channel="bank-b" data-state="draining"' in page
        assert "bank-b" in page and 'id="notice"' in page
        again = await (await s.get(f"{stack.base}/channels")).text()
        assert 'id="notice"' not in again, "a notice shows once"
        r = await s.post(
            f"{stack.base}/channels/bank-b/state", data={"csrf": token, "state": "enabled", "reason": "done"}
        )
        assert r.status == 200
    audit = await stack.h.gateway.db.fetchall(
        "SELECT operator, action, target, reason FROM audit_log WHERE action = 'set_channel_state' ORDER BY id"
    )
    assert [(a["operator"], a["target"], a["reason"]) for a in audit] == [
        ("ops", "bank-b", "maintenance at 02:00"),
        ("ops", "bank-b", "done"),
    ]
    assert stack.h.gateway.router.profile("bank-b") is not None


async def test_a_change_without_a_reason_is_refused_with_the_field_named(stack: Stack) -> None:
    async with client() as s:
        await sign_in(s, stack.base)
        token = await csrf_of(s, stack.base)
        r = await s.post(
            f"{stack.base}/channels/bank-a/state", data={"csrf": token, "state": "disabled", "reason": " "}
        )
        text = await r.text()
        assert r.status == 200 and "reason: is required" in text
    assert await state_rows(stack) == []


async def test_no_secret_and_no_card_number_reaches_the_browser(stack: Stack) -> None:
    secrets = [SECRET, OPERATOR_TOKEN, *CALLER_TOKENS.values(), HASH_KEY, "bank-a-secret", "bank-b-secret", stack.card]
    async with client() as s:
        await sign_in(s, stack.base)
        bodies = []
        for path in (
            "/",
            "/flows",
            f"/flows/{stack.flow_no}",
            "/review",
            "/channels",
            "/outbox",
            "/audit",
            "/flows.csv",
        ):
            r = await s.get(f"{stack.base}{path}")
            bodies.append(await r.text() + str(r.headers) + str(r.cookies))
    everything = "\n".join(bodies)
    for secret in secrets:
        assert secret not in everything
    assert stack.card[-4:] in everything  # the masked form is there


async def test_csv_export_is_the_search_masked_and_formula_safe(stack: Stack) -> None:
    async with client() as s:
        await sign_in(s, stack.base)
        r = await s.get(f"{stack.base}/flows.csv?request_id=http-1")
        assert r.headers["Content-Type"].startswith("text/csv") and "attachment" in r.headers["Content-Disposition"]
        text = (await r.read()).decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert [row["flow_no"] for row in rows] == [stack.flow_no]
    assert rows[0]["amount"] == "123.00" and rows[0]["account_masked"].endswith(stack.card[-4:])
    assert rows[0]["description"].startswith("'=")
    assert stack.card not in text
    audit = await stack.h.gateway.db.fetchall("SELECT operator, detail FROM audit_log WHERE action = 'export_flows'")
    assert audit and "http-1" in audit[-1]["detail"]


async def test_sign_in_goes_only_to_a_page_of_the_console(stack: Stack) -> None:
    for target, expected in (
        ("/flows?x=1", "/flows?x=1"),
        ("//evil.example/", "/"),
        ("http://evil.example/", "/"),
        ("/\\evil.example", "/"),
    ):
        async with client() as s:
            r = await sign_in(s, stack.base, next=target)
            assert r.history and r.history[0].headers["Location"] == expected, target


async def test_released_parked_events_go_back_to_the_relay_audited(stack: Stack) -> None:
    db = stack.h.gateway.db
    flow = await db.fetchone("SELECT id, flow_no, caller FROM flows WHERE flow_no = %s", (stack.flow_no,))
    async with db.transaction() as tx:
        for i, attempts in enumerate((10, 10, 3)):
            await tx.execute(
                "INSERT INTO outbox (event_id, event_type, flow_id, caller, msg_key, payload, created_at, attempts,"
                " last_error) VALUES (%s, 'DISCREPANCY', %s, %s, %s, '', UTC_TIMESTAMP(6), %s, 'topic refused')",
                (f"01PARKED{i:018d}", flow["id"], flow["caller"], flow["flow_no"], attempts),
            )
        await tx.commit()
    rows = await db.fetchall("SELECT id, attempts FROM outbox WHERE event_id LIKE '01PARKED%%' ORDER BY id")
    async with client() as s:
        await sign_in(s, stack.base)
        page = await (await s.get(f"{stack.base}/outbox")).text()
        assert 'id="outbox-parked">2<' in page and "topic refused" in page
        token = await csrf_of(s, stack.base, "/outbox")
        r = await s.post(
            f"{stack.base}/outbox/release",
            data=[("csrf", token), ("reason", "topic re-created"), *[("id", str(row["id"])) for row in rows]],
        )
        assert r.status == 200 and "2" in await r.text()
    after = await db.fetchall("SELECT attempts FROM outbox WHERE event_id LIKE '01PARKED%%' ORDER BY id")
    assert [a["attempts"] for a in after] == [0, 0, 3], "only parked ones are released"
    audit = await db.fetchall("SELECT target, reason FROM audit_log WHERE action = 'release_outbox_event'")
    assert [(a["target"], a["reason"]) for a in audit] == [(stack.flow_no, "topic re-created")] * 2
    async with db.transaction() as tx:
        await tx.execute("DELETE FROM outbox WHERE event_id LIKE '01PARKED%%'")
        await tx.commit()


async def test_a_search_running_past_its_time_is_stopped(stack: Stack) -> None:
    queries = MySQLConsoleQueries(stack.h.gateway.db, timeout_s=0.05)
    with pytest.raises(QueryTooBroad):
        await queries._bounded("SELECT SLEEP(1) AS slept FROM flows LIMIT 1", ())
    assert await queries._bounded("SELECT COUNT(*) AS n FROM flows", ())


async def test_the_language_is_chosen_and_kept(stack: Stack) -> None:
    async with client() as s:
        await sign_in(s, stack.base)
        assert "<h1>概览" in await (await s.get(f"{stack.base}/")).text()
        assert "<h1>Overview" in await (await s.get(f"{stack.base}/?lang=en")).text()
        assert "<h1>Flows" in await (await s.get(f"{stack.base}/flows")).text()


async def test_failed_sign_ins_pause_the_address(tmp_path: Any) -> None:
    db = new_db_config()
    try:
        async with running_gateway(
            db,
            {"bank-a": Behaviour()},
            console={"enabled": True, "port": 0, "secret_key": SECRET, "sign_in_attempts": 3},
        ) as h:
            base = f"http://127.0.0.1:{h.gateway.console_port}"
            async with client() as s:
                for _ in range(3):
                    assert (await sign_in(s, base, token="wrong-token-0000000000")).status == 401
                r = await sign_in(s, base)  # the right token, but this address must wait now
                assert r.status == 429
                assert "/login" in str(r.url)
            await asyncio.sleep(0)
    finally:
        drop_db(db)
