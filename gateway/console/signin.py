"""Signing in and out of the console.

The sign-in form carries a token bound to a short-lived nonce cookie (login CSRF: another site
cannot sign a browser in as someone else). Failed sign-ins are counted per operator name and per
client address; after ``[console] sign_in_attempts`` within 15 minutes that name or address must
wait. Every sign-in and sign-out is written to the audit log; failures are logged (never the
password or token).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

from aiohttp import web

from gateway.console.server import COOKIE, deps, local_path, operator_of, render, set_cookie, t_of
from gateway.console.sessions import new_nonce

log = logging.getLogger("paygate.console")

NONCE_COOKIE = "pg_sign_in"
WINDOW_S = 900.0
_MAX_KEYS = 10_000


class SignInThrottle:
    """Failed sign-ins per key (an operator name, a client address) within a sliding window."""

    def __init__(self, limit: int, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        cutoff = self._clock() - self.window_s
        while failures and failures[0] < cutoff:
            failures.popleft()
        return failures

    def paused(self, keys: Iterable[str]) -> bool:
        return any(len(self._recent(k)) >= self.limit for k in keys)

    def failed(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._failures.setdefault(key, deque()).append(self._clock())
            self._failures.move_to_end(key)
        while len(self._failures) > _MAX_KEYS:  # bounded memory whatever a client sends
            self._failures.popitem(last=False)

    def cleared(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)


THROTTLE = web.AppKey("console_sign_in_throttle", SignInThrottle)


def _throttle(request: web.Request) -> SignInThrottle:
    return request.app[THROTTLE]


def _form(
    request: web.Request, *, status: int = 200, error: str = "", name: str = "", next_path: str = ""
) -> web.Response:
    d = deps(request)
    nonce = new_nonce()
    response = render(
        request,
        "login.html",
        status=status,
        error=error,
        name=name,
        next_path=local_path(next_path or request.query.get("next", "/")),
        sign_in_csrf=d.signer.sign_in_token(nonce),
        token_sign_in=d.operators.token_sign_in,
    )
    set_cookie(request, response, NONCE_COOKIE, nonce, max_age=900)
    return response


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    t = t_of(request)
    return _form(request, error=t("login.expired") if request.query.get("expired") else "")


async def sign_in(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    t = t_of(request)
    form = await request.post()
    next_path = local_path(str(form.get("next", "/")) or "/")
    if not d.signer.sign_in_valid(request.cookies.get(NONCE_COOKIE, ""), str(form.get("csrf", ""))):
        return _form(request, status=403, error=t("login.form_expired"), next_path=next_path)
    name = str(form.get("name", "")).strip()[:64]
    password = str(form.get("password", ""))
    token = str(form.get("token", "")).strip()
    client = request.remote or ""
    keys = [f"addr:{client}", *([f"name:{name}"] if name else [])]
    throttle = _throttle(request)
    if throttle.paused(keys):
        log.warning("console: sign-in paused", extra={"operator": name, "client": client})
        return _form(request, status=429, error=t("login.paused"), name=name, next_path=next_path)
    operator = None
    via = ""
    if token:
        operator, via = d.operators.by_token(token), "token"
    elif name and password:
        operator, via = await d.operators.by_password(name, password), "password"
    if operator is None:
        throttle.failed(keys)
        log.warning("console: sign-in failed", extra={"operator": name, "client": client})
        return _form(request, status=401, error=t("login.failed"), name=name, next_path=next_path)
    throttle.cleared(keys)
    session = d.signer.issue(operator.name, d.operators.session_credential(operator))
    await d.audit.record(operator.name, "console_sign_in", f"console:{operator.name}", f"signed in with {via}", {})
    response = web.HTTPSeeOther(next_path)
    set_cookie(request, response, COOKIE, d.signer.encode(session), max_age=int(d.config.session_lifetime_s))
    response.del_cookie(NONCE_COOKIE, path="/")
    raise response


async def sign_out(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    operator = operator_of(request)
    await d.audit.record(operator.name, "console_sign_out", f"console:{operator.name}", "signed out", {})
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response
