"""The least role each console route needs, checked on the server for every request.

Reads need ``viewer``; every change needs ``operator`` (approvals, once maker-checker is on,
``approver``). A route missing from :data:`MINIMUM_ROLE` is refused (fail closed);
tests/console/test_access.py checks that every route of the app is listed.
"""

from __future__ import annotations

from gateway.console.operators import Role

PUBLIC = frozenset({"sign_in_form", "sign_in", "static"})

MINIMUM_ROLE: dict[str, Role] = {
    # reads
    "overview": Role.VIEWER,
    "flows": Role.VIEWER,
    "flows_csv": Role.VIEWER,
    "flow": Role.VIEWER,
    "review": Role.VIEWER,
    "channels": Role.VIEWER,
    "outbox": Role.VIEWER,
    "audit": Role.VIEWER,
    "sign_out": Role.VIEWER,
    # changes (each audited)
    "requery": Role.OPERATOR,
    "resolve": Role.OPERATOR,
    "channel_state": Role.OPERATOR,
    "position_adjust": Role.OPERATOR,
    "position_resync": Role.OPERATOR,
    "outbox_release": Role.OPERATOR,
    # the second person of maker-checker
    "approve": Role.APPROVER,
    "reject": Role.APPROVER,
}
