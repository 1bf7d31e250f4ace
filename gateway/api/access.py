"""Who may call what: each service's audience, and the least role each operator method needs.

The interceptor (gateway/api/auth.py) reads these two tables for every call, on the server:

* :data:`SERVICE_AUDIENCE`: a paygate service (by its full name) is for callers or for operators.
  A method of a ``paygate.`` service that is not listed is refused (fail closed: a new service is
  served only once someone has said who it is for); other services (health, reflection) need no
  credentials.
* :data:`MINIMUM_ROLE`: every method of an operator service, with the least role that may call it
  (viewer < operator < approver, :class:`~gateway.security.principals.Role`). A method missing from
  the table is refused with PERMISSION_DENIED; tests/unit/api/test_access.py checks that every
  method of every operator service is listed, and nothing else.

Adding a service (``paygate.v1.PlanService`` in ``protos/paygate/v1/plans.proto``, say): add its line
to :data:`SERVICE_AUDIENCE`; if it is for operators, add each of its methods to
:data:`MINIMUM_ROLE` (reads: viewer; changes: operator; second-person approvals: approver).
"""

from __future__ import annotations

from gateway.security.principals import Audience, Role

PAYGATE_PREFIX = "paygate."

SERVICE_AUDIENCE: dict[str, Audience] = {
    "paygate.v1.PaymentGateway": Audience.CALLER,
    "paygate.v1.GatewayAdmin": Audience.OPERATOR,
    "paygate.v1.WithholdingPlans": Audience.CALLER,
    "paygate.v1.PlanAdmin": Audience.OPERATOR,
    "paygate.v1.SplitSettlement": Audience.OPERATOR,
    "paygate.v1.Reconciliation": Audience.OPERATOR,
}

_ADMIN = "/paygate.v1.GatewayAdmin/"
_PLAN_ADMIN = "/paygate.v1.PlanAdmin/"
_SPLITS = "/paygate.v1.SplitSettlement/"
_RECON = "/paygate.v1.Reconciliation/"

MINIMUM_ROLE: dict[str, Role] = {
    # reads
    _ADMIN + "ListChannels": Role.VIEWER,
    _ADMIN + "ListReviewFlows": Role.VIEWER,
    _ADMIN + "ListDiscrepancies": Role.VIEWER,
    _ADMIN + "ListPendingResolutions": Role.VIEWER,
    _ADMIN + "ListAuditLog": Role.VIEWER,
    # changes (each audited)
    _ADMIN + "SetChannelState": Role.OPERATOR,
    _ADMIN + "AdjustPosition": Role.OPERATOR,
    _ADMIN + "ResyncPosition": Role.OPERATOR,
    _ADMIN + "RequeryFlow": Role.OPERATOR,
    _ADMIN + "ResolveFlow": Role.OPERATOR,  # above [security] resolve_approval_above: recorded, pending approval
    # the second person of maker-checker
    _ADMIN + "ApproveResolution": Role.APPROVER,
    _ADMIN + "RejectResolution": Role.APPROVER,
    # withholding plans' time point runs (docs/PLANS.md)
    _PLAN_ADMIN + "GetRun": Role.VIEWER,
    _PLAN_ADMIN + "ListRuns": Role.VIEWER,
    _PLAN_ADMIN + "StartRun": Role.OPERATOR,
    _PLAN_ADMIN + "PauseRun": Role.OPERATOR,
    _PLAN_ADMIN + "ResumeRun": Role.OPERATOR,
    # joint-loan settlements (docs/SPLITS.md)
    _SPLITS + "ListFunders": Role.VIEWER,
    _SPLITS + "ListSettlements": Role.VIEWER,
    _SPLITS + "GetStatement": Role.VIEWER,
    _SPLITS + "RunSettlement": Role.OPERATOR,
    _SPLITS + "ResendSettlementPayout": Role.OPERATOR,  # audited in the re-send's own commit
    # reconciliation (docs/RECONCILIATION.md)
    _RECON + "GetRun": Role.VIEWER,
    _RECON + "ListRuns": Role.VIEWER,
    _RECON + "ListDiscrepancies": Role.VIEWER,
    _RECON + "Run": Role.OPERATOR,
    _RECON + "Import": Role.OPERATOR,
    _RECON + "ResolveDiscrepancy": Role.OPERATOR,
}


class Unmapped(Exception):
    """A paygate method no table says who may call."""


def service_of(method: str) -> str:
    """``paygate.v1.GatewayAdmin`` of ``/paygate.v1.GatewayAdmin/ListChannels``."""
    return method.lstrip("/").rsplit("/", 1)[0]


def audience_of(method: str) -> Audience | None:
    """The audience of a full method name; None for a public (non-paygate) service; raises :class:`Unmapped`."""
    service = service_of(method)
    audience = SERVICE_AUDIENCE.get(service)
    if audience is None and service.startswith(PAYGATE_PREFIX):
        raise Unmapped(f"service {service} has no audience in gateway/api/access.py")
    return audience


def minimum_role(method: str) -> Role:
    """The least role that may call an operator method; raises :class:`Unmapped` when it is not listed."""
    role = MINIMUM_ROLE.get(method)
    if role is None:
        raise Unmapped(f"{method} has no minimum role in gateway/api/access.py")
    return role
