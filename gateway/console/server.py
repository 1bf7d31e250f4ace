"""The console's HTTP application: its routes, the checks every request passes, and page rendering.

Every request passes, in this order (the middlewares below):

1. **headers**: a Content-Security-Policy that allows scripts, styles and connections from the
   console itself only (no inline script, no eval, no other host), ``frame-ancestors 'none'`` and
   ``X-Frame-Options: DENY``, ``nosniff``, no referrer, and ``Cache-Control: no-store`` on every
   answer but the static files: on errors too;
2. **errors**: a known error becomes a page that says what was wrong (escaped, scrubbed); anything
   else is logged and shown as "internal error", never as a traceback;
3. **session**: the signed session cookie (:mod:`gateway.console.sessions`), then the operator
   looked up in the configuration on every request (so a removed operator or a changed role takes
   effect at once); no valid session sends a page to the sign-in form and refuses a form post;
4. **role**: the route's minimum role (:mod:`gateway.console.access`), for reads and changes
   alike; a viewer posting a form by hand gets 403 and nothing changes;
5. **CSRF** on every POST: the form's token must be the session's, and a request a browser marks
   as coming from another site (``Origin``, ``Sec-Fetch-Site``) is refused.

Pages are Jinja2 templates with autoescape on: everything shown is escaped (a description holding
``<script>`` shows as text). Data for charts is embedded as JSON (``tojson`` escapes ``<``),
read by the console's own script file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web

from channels.registry import ChannelRegistry
from gateway.businessday import BusinessCalendar
from gateway.config import ConfigError
from gateway.console.access import MINIMUM_ROLE, PUBLIC
from gateway.console.config import ConsoleConfig
from gateway.console.i18n import LANGUAGES, pick_language, translator
from gateway.console.operators import ConsoleOperator, OperatorDirectory, Role
from gateway.console.ports import ConsoleReads
from gateway.console.screens import CORE_NAV, NavItem
from gateway.console.sessions import COOKIE as COOKIE
from gateway.console.sessions import Session, SessionSigner
from gateway.domain import scrub
from gateway.errors import DatabaseUnavailable, GatewayError, InvalidInput, NotFound
from gateway.operations import Operations
from gateway.planner import Planner
from gateway.ports import AuditLog, FlowStore, PositionStore
from gateway.splits.settlement import SettlementService
from gateway.store.console_rows import DayPoint

if TYPE_CHECKING:
    from gateway.console.plans import PlansDeps
    from gateway.recon.service import Reconciler

log = logging.getLogger("paygate.console")

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
# installed from the npm registry by `make assets` (npm ci), never committed (see .gitignore)
VENDOR_FILES = ("vendor/echarts.min.js",)

LANG_COOKIE = "pg_lang"
NOTICE_COOKIE = "pg_notice"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self';"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make browsers send Origin: null on our own posts
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


@dataclass
class ConsoleDeps:
    """What the console reads and acts through; built by gateway/app.py."""

    config: ConsoleConfig
    reads: ConsoleReads
    flows: FlowStore
    operations: Operations
    operators: OperatorDirectory
    calendar: BusinessCalendar
    registry: ChannelRegistry
    planner: Planner
    positions: PositionStore
    audit: AuditLog
    outbox_max_attempts: int = 10
    settlement: SettlementService | None = None  # joint-loan funders' settlements (the settlements screen)
    relay_enabled: bool = False
    plans: PlansDeps | None = None  # the plans screen's reads and use cases, when [plans] is configured
    recon: Reconciler | None = None  # reconciliation's use case (the reconciliation screen), as its API's
    clock: Callable[[], float] = time.time
    signer: SessionSigner = field(init=False)
    # the overview's trend of the days before yesterday: (expires at, points), see pages._earlier_days
    trend_cache: dict[tuple[tuple[datetime, datetime], ...], tuple[float, list[DayPoint]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.signer = SessionSigner(
            self.config.secret_key.reveal(),
            lifetime_s=self.config.session_lifetime_s,
            idle_s=self.config.session_idle_s,
            clock=self.clock,
        )


DEPS = web.AppKey("console_deps", ConsoleDeps)
TEMPLATES = web.AppKey("console_templates", jinja2.Environment)
# every route's least role (the core ones' and the added screens'), and the navigation shown
ROLES = web.AppKey("console_roles", dict)
NAV = web.AppKey("console_nav", tuple)
# what the middlewares establish for one request
LANG = web.RequestKey("console_lang", str)
SESSION = web.RequestKey("console_session", Session)
OPERATOR = web.RequestKey("console_operator", ConsoleOperator)
NOTICE = web.RequestKey("console_notice", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def missing_assets() -> list[str]:
    return [name for name in VENDOR_FILES if not (STATIC / name).is_file()]


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # free text from callers and channels (descriptions, raw messages): card, id and phone numbers masked
    env.filters["scrub"] = lambda text: scrub(str(text))
    return env


# --- request helpers ---------------------------------------------------------------------


def deps(request: web.Request) -> ConsoleDeps:
    return request.app[DEPS]


def operator_of(request: web.Request) -> ConsoleOperator:
    return request[OPERATOR]


def language(request: web.Request) -> str:
    return request[LANG]


def t_of(request: web.Request) -> Callable[..., str]:
    return translator(language(request))


def render(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """The page ``template`` with the common context (words, operator, CSRF token, notice)."""
    env = request.app[TEMPLATES]
    session = request.get(SESSION)
    d = deps(request)
    operator = request.get(OPERATOR)
    body = env.get_template(template).render(
        t=t_of(request),
        lang=language(request),
        languages=LANGUAGES,
        path=request.path,
        query=request.query_string,
        operator=operator,
        csrf=d.signer.csrf_token(session) if session is not None else "",
        notice=request.get(NOTICE),
        nav=request.match_info.route.name or "",
        nav_items=request.app[NAV],
        **context,
    )
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def notice_redirect(
    request: web.Request, location: str, key: str, *, error: bool = False, **values: Any
) -> web.HTTPSeeOther:
    """303 to ``location`` (to raise) with a one-time notice (signed cookie, 60 s) that the next page shows."""
    d = deps(request)
    response = web.HTTPSeeOther(location)
    sealed = d.signer.seal({"key": key, "error": error, "values": {k: str(v) for k, v in values.items()}}, ttl_s=60)
    set_cookie(request, response, NOTICE_COOKIE, sealed, max_age=60)
    return response


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, *, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=deps(request).config.secure_cookies or request.secure,
    )


def local_path(target: str) -> str:
    """``target`` if it is a path on this console (no scheme, no host, no ``//``), else ``/``."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "error.html", status=status, message=message)


# --- middlewares -------------------------------------------------------------------------


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _secure(request, exc)
        raise
    _secure(request, response)
    return response


def _secure(request: web.Request, response: web.StreamResponse) -> None:
    if response.prepared:  # a streamed answer (CSV) set its headers before its first byte
        return
    response.headers.update(SECURITY_HEADERS)
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "private, max-age=3600"
    else:
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"


def _language_of(request: web.Request) -> str:
    return pick_language(
        request.query.get("lang") or request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language")
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[LANG] = _language_of(request)
    t = t_of(request)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status == 404:
            return error_page(request, 404, t("error.not_found"))
        raise
    except InvalidInput as exc:
        return error_page(request, 400, t("error.invalid", detail=scrub(str(exc))))
    except NotFound as exc:
        return error_page(request, 404, scrub(str(exc)))
    except DatabaseUnavailable:
        return error_page(request, 503, t("error.unavailable"))
    except GatewayError as exc:
        return error_page(request, 409, t("error.failed", detail=scrub(str(exc))))
    except Exception:
        log.exception("console: unhandled error on %s %s", request.method, request.path)
        return error_page(request, 500, t("error.internal"))
    if request.query.get("lang") in LANGUAGES and not response.prepared:
        set_cookie(request, response, LANG_COOKIE, request[LANG], max_age=365 * 86400)
    return response


@web.middleware
async def session_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.name or ""
    if route in PUBLIC or request.match_info.http_exception is not None:
        return await handler(request)
    d = deps(request)
    t = t_of(request)
    raw = request.cookies.get(COOKIE, "")
    session = d.signer.decode(raw) if raw else None
    operator = d.operators.get(session.operator) if session is not None else None
    if (
        session is None
        or operator is None
        or session.credential != d.signer.fingerprint(d.operators.session_credential(operator))
    ):
        if request.method == "GET":
            target = quote(request.path_qs, safe="")
            raise web.HTTPSeeOther(f"/login?next={target}{'&expired=1' if raw else ''}")
        return error_page(request, 401, t("login.expired"))
    request[SESSION] = session
    request[OPERATOR] = operator
    required = request.app[ROLES].get(route)
    if required is None or not operator.role.allows(required):
        log.warning("console: %s (%s) refused %s %s", operator.name, operator.role.value, request.method, request.path)
        return error_page(request, 403, t("error.forbidden_role", role=t(f"role.{operator.role.value}")))
    if request.method not in ("GET", "HEAD") and not await _csrf_ok(request, d, session):
        log.warning("console: CSRF check failed for %s on %s", operator.name, request.path)
        return error_page(request, 403, t("error.csrf"))
    notice_raw = request.cookies.get(NOTICE_COOKIE)
    if notice_raw and request.method == "GET":
        notice = _notice(t, d.signer.unseal(notice_raw))
        if notice is not None:
            request[NOTICE] = notice
    response = await handler(request)
    if notice_raw and request.method == "GET" and not response.prepared:
        response.del_cookie(NOTICE_COOKIE, path="/")
    if d.clock() - session.seen_at > 30 and not response.prepared:
        fresh = d.signer.touch(session)
        set_cookie(request, response, COOKIE, d.signer.encode(fresh), max_age=int(d.config.session_lifetime_s))
    return response


def _notice(t: Callable[..., str], sealed: object) -> dict[str, Any] | None:
    if not isinstance(sealed, dict) or not isinstance(sealed.get("key"), str):
        return None
    raw = sealed.get("values")
    values: dict[str, Any] = {str(k): str(x) for k, x in raw.items()} if isinstance(raw, dict) else {}
    return {"text": t(sealed["key"], **values), "error": bool(sealed.get("error"))}


async def _csrf_ok(request: web.Request, d: ConsoleDeps, session: Session) -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        return False
    form = await request.post()
    token = request.headers.get("X-CSRF-Token") or str(form.get("csrf", ""))
    return d.signer.csrf_valid(session, token)


# --- the application -----------------------------------------------------------------------


def build_app(console: ConsoleDeps) -> web.Application:
    """The console's aiohttp application. Raises ConfigError when the front-end libraries are not installed."""
    missing = missing_assets()
    if missing:
        raise ConfigError(
            "console",
            f"front-end libraries are not installed ({', '.join(missing)} under {STATIC}):"
            " run `make assets` (npm ci from package-lock.json)",
        )
    from gateway.console import actions, pages, screens, signin

    app = web.Application(
        middlewares=[headers_middleware, errors_middleware, session_middleware], client_max_size=256 * 1024
    )
    app[DEPS] = console
    app[TEMPLATES] = templates()
    app[signin.THROTTLE] = signin.SignInThrottle(console.config.sign_in_attempts)
    r = app.router
    r.add_get("/login", signin.sign_in_form, name="sign_in_form")
    r.add_post("/login", signin.sign_in, name="sign_in")
    r.add_post("/logout", signin.sign_out, name="sign_out")
    r.add_get("/", pages.overview, name="overview")
    r.add_get("/flows", pages.flows, name="flows")
    r.add_get("/flows.csv", pages.flows_csv, name="flows_csv")
    r.add_get("/flows/{flow_no}", pages.flow, name="flow")
    r.add_get("/review", pages.review, name="review")
    r.add_post("/review/{flow_no}/requery", actions.requery, name="requery")
    r.add_post("/review/{flow_no}/resolve", actions.resolve, name="resolve")
    r.add_post("/resolutions/{resolution_id}/approve", actions.approve, name="approve")
    r.add_post("/resolutions/{resolution_id}/reject", actions.reject, name="reject")
    r.add_get("/channels", pages.channels, name="channels")
    r.add_post("/channels/{channel}/state", actions.channel_state, name="channel_state")
    r.add_post("/channels/{channel}/position/adjust", actions.position_adjust, name="position_adjust")
    r.add_post("/channels/{channel}/position/resync", actions.position_resync, name="position_resync")
    r.add_get("/outbox", pages.outbox, name="outbox")
    r.add_post("/outbox/release", actions.outbox_release, name="outbox_release")
    r.add_get("/audit", pages.audit, name="audit")
    r.add_static("/static/", STATIC, name="static", show_index=False, follow_symlinks=False)
    roles: dict[str, Role] = dict(MINIMUM_ROLE)
    nav: list[NavItem] = list(CORE_NAV)
    for screen in screens.registered():
        for route in screen.routes:
            if route.name in roles or route.name in PUBLIC:
                raise ValueError(f"console route {route.name!r} is registered twice")
            r.add_route(route.method, route.path, route.handler, name=route.name)
            roles[route.name] = route.role
        if screen.shown(console):
            nav.append(screen.nav)
    app[ROLES] = roles
    app[NAV] = tuple(nav)
    return app
