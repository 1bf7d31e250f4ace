"""The console's navigation and the screens added to the core ones, each registered by one line.

The core screens (overview, flows, review, channels, outbox, audit) have their routes in
:func:`gateway.console.server.build_app` and their roles in :data:`gateway.console.access.MINIMUM_ROLE`.
A screen added later lives in its own module (handlers, template, words) and describes itself
with a :class:`Screen`: its entry in the navigation, its routes and the least role of each. To add
one, write the module and add its line to :data:`SCREENS`; its words go in a ``WORDS`` table
added in :mod:`gateway.console.i18n` the same way (one line in ``ADDED_WORDS``).

The server adds the routes of every screen, checks their roles like the core ones (for every
request, on the server; tests/console/test_access.py checks every route has one) and shows the
navigation entry of each screen whose ``shown`` says it is configured on this gateway.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.console.operators import Role

if TYPE_CHECKING:
    from gateway.console.server import ConsoleDeps

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# the screens added to the core ones, "module:attribute" of their Screen: one line each
SCREENS: tuple[str, ...] = (
    "gateway.console.plans:SCREEN",
    "gateway.console.settlements:SCREEN",
    "gateway.console.recon:SCREEN",
)


@dataclass(frozen=True)
class NavItem:
    """One entry of the navigation: the page's route name, its path and the key of its label."""

    route: str
    path: str
    label: str
    also: frozenset[str] = frozenset()  # other routes under this entry (a flow's page is under "flows")

    def on(self, current: str) -> bool:
        return current == self.route or current in self.also


@dataclass(frozen=True)
class Route:
    method: str  # GET or POST
    path: str
    handler: Handler
    name: str
    role: Role  # the least role: viewer for reads, operator for changes, approver for approvals


def _always(deps: ConsoleDeps) -> bool:
    return True


@dataclass(frozen=True)
class Screen:
    nav: NavItem
    routes: tuple[Route, ...]
    # whether this gateway offers the screen (e.g. plans configured); its routes exist either way
    shown: Callable[[ConsoleDeps], bool] = field(default=_always)


CORE_NAV: tuple[NavItem, ...] = (
    NavItem("overview", "/", "nav.overview"),
    NavItem("flows", "/flows", "nav.flows", frozenset({"flow"})),
    NavItem("review", "/review", "nav.review"),
    NavItem("channels", "/channels", "nav.channels"),
    NavItem("outbox", "/outbox", "nav.outbox"),
    NavItem("audit", "/audit", "nav.audit"),
)


def registered() -> list[Screen]:
    """The added screens, in the order of :data:`SCREENS` (imported here: they import the server)."""
    found: list[Screen] = []
    for ref in SCREENS:
        module, _, attribute = ref.partition(":")
        screen: Any = getattr(importlib.import_module(module), attribute)
        if not isinstance(screen, Screen):
            raise TypeError(f"{ref} is not a console Screen")
        found.append(screen)
    return found
