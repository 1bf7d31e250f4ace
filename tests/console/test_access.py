"""Every console route says the least role it needs, and every change needs more than a viewer."""

from __future__ import annotations

from gateway.console.access import MINIMUM_ROLE, PUBLIC
from gateway.console.operators import Role
from gateway.console.server import missing_assets


def _routes() -> list[tuple[str, str]]:
    # build_app needs the installed libraries (make assets); the routes are what matter here
    from unittest import mock

    from gateway.console import server

    with mock.patch.object(server, "missing_assets", return_value=[]):
        app = server.build_app(mock.MagicMock())
    return [(route.method, route.name or "") for route in app.router.routes()]


def test_every_route_is_public_or_has_a_minimum_role() -> None:
    routes = _routes()
    names = {name for _, name in routes}
    assert names - PUBLIC == set(MINIMUM_ROLE), "a route without a minimum role is refused; list it in access.py"


def test_every_change_needs_at_least_an_operator() -> None:
    posts = {name for method, name in _routes() if method == "POST"} - PUBLIC - {"sign_out"}
    assert posts
    for name in posts:
        assert MINIMUM_ROLE[name].allows(Role.OPERATOR) and MINIMUM_ROLE[name] is not Role.VIEWER, name
    reads = {name for method, name in _routes() if method == "GET"} - PUBLIC
    assert all(MINIMUM_ROLE[name] is Role.VIEWER for name in reads)
    assert MINIMUM_ROLE["approve"] is Role.APPROVER and MINIMUM_ROLE["reject"] is Role.APPROVER


def test_the_libraries_are_installed() -> None:
    assert missing_assets() == [], "run make assets"
