"""Every console route says the least role it needs, and every change needs more than a viewer.

The core routes' roles are in gateway/console/access.py, the added screens' in their Screen
(gateway/console/screens.py); the server checks the table of both (``ROLES``)."""

from __future__ import annotations

from typing import Any

from gateway.console.access import MINIMUM_ROLE, PUBLIC
from gateway.console.operators import Role
from gateway.console.server import missing_assets


def _app() -> Any:
    # build_app needs the installed libraries (make assets); the routes are what matter here
    from unittest import mock

    from gateway.console import server

    with mock.patch.object(server, "missing_assets", return_value=[]):
        return server.build_app(mock.MagicMock())


def _routes() -> list[tuple[str, str]]:
    return [(route.method, route.name or "") for route in _app().router.routes()]


def _roles() -> dict[str, Role]:
    from gateway.console.server import ROLES

    roles: dict[str, Role] = _app()[ROLES]
    return roles


def test_every_route_is_public_or_has_a_minimum_role() -> None:
    routes = _routes()
    names = {name for _, name in routes}
    roles = _roles()
    assert names - PUBLIC == set(roles), "a route without a minimum role is refused; list it in access.py"
    assert set(MINIMUM_ROLE) <= set(roles) and all(roles[name] is role for name, role in MINIMUM_ROLE.items())
    assert {"plans", "plan_run_start", "plan_run_pause", "plan_run_resume"} <= set(roles)  # an added screen


def test_every_change_needs_at_least_an_operator() -> None:
    roles = _roles()
    posts = {name for method, name in _routes() if method == "POST"} - PUBLIC - {"sign_out"}
    assert posts
    for name in posts:
        assert roles[name].allows(Role.OPERATOR) and roles[name] is not Role.VIEWER, name
    reads = {name for method, name in _routes() if method == "GET"} - PUBLIC
    assert all(roles[name] is Role.VIEWER for name in reads)
    assert roles["approve"] is Role.APPROVER and roles["reject"] is Role.APPROVER


def test_the_libraries_are_installed() -> None:
    assert missing_assets() == [], "run make assets"
