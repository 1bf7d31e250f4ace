"""Adversarial probes of the console over HTTP, as an outside client or a hostile operator would try it.

Every POST route of the router table (enumerated, not listed by hand) needs a session, its role
and the session's CSRF token, and changes nothing (no audit record) without them; hostile values
in query strings and forms are a 400 page naming the field, never a 500 or a traceback; stored
text is shown escaped; no redirect leaves the console.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from gateway.console.sessions import COOKIE
from paygate.v1 import gateway_pb2 as pb
from tests.console.test_access import _app
from tests.console.test_console_http import client, csrf_of, sign_in
from tests.support.harness import OPERATOR_TOKEN, Harness, running_gateway
from tests.support.services import drop_db, new_db_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "console-adversarial-secret-0123456789abcdef"
CLERK_TOKEN = "clerk-token-adversarial-0123456789"
VIEWER_TOKEN = "viewer-token-adversarial-0123456789"
OPERATORS = {
    "ops": {"token": OPERATOR_TOKEN, "role": "approver"},
    "clerk": {"token": CLERK_TOKEN, "role": "operator"},
    "watcher": {"token": VIEWER_TOKEN, "role": "viewer"},
}
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@dataclass
class Stack:
    h: Harness
    base: str
    flow_no: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    db = new_db_config()
    try:
        async with running_gateway(
            db,
            {"bank-a": Behaviour()},
            operators=OPERATORS,
            console={"enabled": True, "port": 0, "secret_key": SECRET},
        ) as h:
            card = luhn_card()
            await h.bind_card(card, ["bank-a"])
            flow = await h.stub.Withhold(
                pb.WithholdRequest(
                    request_id="xss-1",
                    amount=pb.Money(amount=100, currency="CNY"),
                    account_no=card,
                    bank_code="ICBC",
                    description=XSS[:128],
                ),
                metadata=h.md(),
            )
            yield Stack(h, f"http://127.0.0.1:{h.gateway.console_port}", flow.flow_no)
    finally:
        drop_db(db)


def post_routes(flow_no: str) -> list[tuple[str, str]]:
    """(route name, a concrete path) of every POST route the console serves but the sign-in form's."""
    values = {"flow_no": flow_no, "resolution_id": "1", "channel": "bank-a"}
    found = []
    for route in _app().router.routes():
        if route.method != "POST" or route.name == "sign_in":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = str(info.get("formatter") or info.get("path"))
        found.append((route.name or "", re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)))
    return found


async def audit_count(stack: Stack) -> int:
    row = await stack.h.gateway.db.fetchone("SELECT COUNT(*) AS n FROM audit_log WHERE action <> 'console_sign_in'")
    assert row is not None
    return int(row["n"])


async def set_state(
    s: aiohttp.ClientSession, stack: Stack, token: str, state: str, reason: str
) -> aiohttp.ClientResponse:
    return await s.post(f"{stack.base}/channels/bank-a/state", data={"csrf": token, "state": state, "reason": reason})


FORM = {"reason": "probe", "state": "disabled", "status": "FAILED", "delta": "1.00", "id": "1", "day": "2026-01-01"}


async def test_the_router_table_has_the_changes_this_probe_posts_to() -> None:
    names = {name for name, _ in post_routes("01AAAAAAAAAAAAAAAAAAAAAAAA")}
    assert {"channel_state", "approve", "outbox_release", "plan_run_start", "settlement_resend", "recon_mark"} <= names


async def test_every_post_route_needs_a_session_a_role_and_the_csrf_token(stack: Stack) -> None:
    before = await audit_count(stack)
    routes = post_routes(stack.flow_no)
    async with client() as anonymous:
        for name, path in routes:
            r = await anonymous.post(f"{stack.base}{path}", data=FORM, allow_redirects=False)
            assert r.status == 401, name
    async with client() as viewer, client() as clerk, client() as other:
        await sign_in(viewer, stack.base, VIEWER_TOKEN)
        await sign_in(clerk, stack.base, CLERK_TOKEN)
        await sign_in(other, stack.base, OPERATOR_TOKEN)
        viewer_token = await csrf_of(viewer, stack.base, "/")
        clerk_token = await csrf_of(clerk, stack.base, "/")
        others_token = await csrf_of(other, stack.base, "/")
        for name, path in routes:
            if name != "sign_out":  # a viewer may sign out; nothing else
                r = await viewer.post(f"{stack.base}{path}", data={**FORM, "csrf": viewer_token}, allow_redirects=False)
                assert r.status == 403, name
            for token in ("", others_token, clerk_token[:-2] + "AA"):
                r = await clerk.post(f"{stack.base}{path}", data={**FORM, "csrf": token}, allow_redirects=False)
                assert r.status == 403, (name, token)
            if name in ("approve", "reject"):  # the second person of maker-checker
                r = await clerk.post(f"{stack.base}{path}", data={**FORM, "csrf": clerk_token}, allow_redirects=False)
                assert r.status == 403, name
        assert (await clerk.get(f"{stack.base}/", allow_redirects=False)).status == 200  # still signed in
    assert await audit_count(stack) == before


HOSTILE = [
    "9999-12-31",
    "0001-01-01",
    "2026-W50-1",
    "2026-02-30",
    "-1",
    "1e309",
    "١٢",
    "１２",
    "\u202e1202",
    "\x00",
    "' OR 1=1 --",
    "x" * 3000,
    "9" * 40,
    "1,0.5",
]
QUERIES = {
    "/flows": ("flow_no", "request_id", "caller", "kind", "status", "channel", "min", "max", "from", "to", "after"),
    "/flows.csv": ("from", "to", "min", "after"),
    "/audit": ("operator", "target", "from", "to", "before"),
    "/review": ("after",),
    "/plans": ("plan_id", "caller", "status", "from", "to", "after"),
    "/recon": ("channel", "day", "run"),
    "/settlements": ("funder", "day"),
}


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
async def test_hostile_query_values_are_refused_naming_the_field_never_a_500(stack: Stack, value: str) -> None:
    async with client() as s:
        await sign_in(s, stack.base, VIEWER_TOKEN)
        for path, fields in QUERIES.items():
            for field in fields:
                r = await s.get(f"{stack.base}{path}", params={field: value, "lang": "en"}, allow_redirects=False)
                body = await r.text()
                assert r.status in (200, 400), (path, field, r.status)
                assert "Traceback" not in body and "internal error" not in body.lower(), (path, field)
                if r.status == 400:
                    assert f"Invalid input: {field}" in body, (path, field, body[-400:])


async def test_hostile_values_in_forms_are_refused_naming_the_field_never_a_500(stack: Stack) -> None:
    async with client() as s:
        await sign_in(s, stack.base, OPERATOR_TOKEN)
        token = await csrf_of(s, stack.base, "/")
        posts = [
            ("/channels/bank-a/position/adjust", {"delta": "1,0.5", "reason": "x"}, "delta"),
            ("/channels/bank-a/position/adjust", {"delta": "9" * 40, "reason": "x"}, "delta"),
            ("/channels/bank-a/state", {"state": "disabled", "reason": "x" * 5000}, "reason"),
            ("/recon/discrepancies/mark", {"run": "١", "id": "1", "resolution": "RESOLVED", "reason": "x"}, "run"),
            ("/settlements/resend", {"funder": "xd", "day": "2026-W50-1", "reason": "x"}, "day"),
            ("/settlements/resend", {"funder": "xd", "day": "9999-12-31", "reason": "x"}, "day"),
            ("/outbox/release", {"id": "9" * 40, "reason": "x"}, "id"),
            ("/plans/runs/start", {"policy": "x", "business_day": "2026-W50-1", "reason": "x"}, ""),
        ]
        for path, data, field in posts:
            r = await s.post(f"{stack.base}{path}?lang=en", data={**data, "csrf": token})
            body = await r.text()
            assert r.status in (200, 400, 404), (path, r.status)
            assert "Traceback" not in body and "internal error" not in body.lower(), (path, body[-400:])
            assert not field or f"{field}:" in body or f"{field} " in body, (path, field, body[-600:])


@pytest.mark.parametrize("flow_no", ["%0d%0aSet-Cookie:%20x=1", "%2F%2Fevil.example", "%E2%80%AE"])
async def test_a_hostile_flow_number_in_an_action_path_is_refused_not_a_500(stack: Stack, flow_no: str) -> None:
    async with client() as s:
        await sign_in(s, stack.base, OPERATOR_TOKEN)
        token = await csrf_of(s, stack.base, "/")
        for action in ("requery", "resolve"):
            r = await s.post(
                f"{stack.base}/review/{flow_no}/{action}?lang=en",
                data={"csrf": token, "back": "flow", "status": "FAILED", "reason": "x"},
                allow_redirects=False,
            )
            assert r.status in (303, 400, 404), (action, r.status)
            location = r.headers.get("Location", "/")
            assert location.startswith("/") and not location.startswith("//") and "\n" not in location


async def test_stored_text_is_shown_escaped(stack: Stack) -> None:
    async with client() as s:
        await sign_in(s, stack.base, OPERATOR_TOKEN)
        token = await csrf_of(s, stack.base, "/channels")
        assert (await set_state(s, stack, token, "draining", XSS)).status == 200
        for path in (f"/flows/{stack.flow_no}", "/flows?request_id=xss-1", "/audit", "/channels"):
            body = await (await s.get(f"{stack.base}{path}")).text()
            assert "<script>alert" not in body and "<img src=x" not in body, path
        assert "&lt;script&gt;" in await (await s.get(f"{stack.base}/audit")).text()
        assert (await set_state(s, stack, token, "enabled", "ok")).status == 200


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example", "/\\evil.example", "\\\\evil.example", "/%2F%2Fevil.example"]
)
async def test_the_sign_in_form_never_sends_the_browser_away(stack: Stack, target: str) -> None:
    async with client() as s:
        r = await s.get(f"{stack.base}/login", params={"next": target})
        assert 'value="https://' not in await r.text() and 'value="//' not in await r.text()
        signed = await sign_in(s, stack.base, VIEWER_TOKEN, next=target)
        location = signed.history[0].headers["Location"] if signed.history else "/"
        assert location.startswith("/") and not location.startswith("//") and "\\" not in location, location


async def test_pages_are_not_framed_not_cached_and_load_nothing_from_another_host(stack: Stack) -> None:
    async with client() as s:
        await sign_in(s, stack.base, VIEWER_TOKEN)
        for path in ("/", f"/flows/{stack.flow_no}", "/flows.csv", "/flows?from=2026-W50-1", "/nowhere"):
            r = await s.get(f"{stack.base}{path}")
            csp = r.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in csp and r.headers["X-Frame-Options"] == "DENY", path
            assert "http:" not in csp and "https:" not in csp and "*" not in csp, csp
            assert r.headers["Cache-Control"] == "no-store", path
            body = await r.text()
            assert not re.search(r"""<(script|link)[^>]+(src|href)="(https?:)?//""", body), path


async def test_a_long_reason_or_unicode_is_kept_to_its_limit_never_a_500(stack: Stack) -> None:
    async with client() as s:
        await sign_in(s, stack.base, OPERATOR_TOKEN)
        token = await csrf_of(s, stack.base, "/channels")
        r = await s.post(
            f"{stack.base}/channels/bank-a/state?lang=en",
            data={"csrf": token, "state": "draining", "reason": "原因\u202e" * 10},
        )
        assert r.status == 200 and "internal error" not in (await r.text()).lower()
        assert (await set_state(s, stack, token, "enabled", "ok")).status == 200
    big = aiohttp.FormData({"csrf": "x", "reason": "x" * 300_000})
    async with client() as s:
        await sign_in(s, stack.base, OPERATOR_TOKEN)
        r = await s.post(f"{stack.base}/channels/bank-a/state", data=big)
        assert r.status in (403, 413), r.status


async def test_signing_in_needs_the_forms_own_nonce(stack: Stack) -> None:
    async with client() as s, client() as attacker:
        form = await (await attacker.get(f"{stack.base}/login")).text()
        found = re.search(r'name="csrf" value="([^"]+)"', form)
        assert found is not None
        # a valid token posted with another browser's form token (login CSRF), or with none: no session
        for csrf in (found.group(1), ""):
            r = await s.post(f"{stack.base}/login", data={"csrf": csrf, "token": VIEWER_TOKEN}, allow_redirects=False)
            assert r.status == 403 and COOKIE not in r.headers.get("Set-Cookie", ""), r.status
        assert (await s.get(f"{stack.base}/", allow_redirects=False)).status == 303
