"""Submitted plans, checked item by item: what is accepted, what is refused and why. Pure: no I/O.

A submission carries many plans; a bad field refuses only the item it belongs to (a plan-level
field refuses the plan and its instalments in this message, an instalment's field that instalment)
and says which item and which field, as ``plans[3].instalments[7].amount.amount``. The good items
go ahead. Field checks are the ones the rest of the API uses (gateway/validation.py), so a plan's
account, bank code and agreement are held to the same rules as a ``Withhold``.

Idempotency keys: ``(caller, plan_id)`` and ``(caller, instalment_id)``. Each item carries the
canonical hash of the parameters that define it; the store compares it with an existing row's
(same hash: a replay, nothing written; other hash: refused with ``ALREADY_EXISTS``).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from gateway import validation as v
from gateway.domain import CURRENCIES, account_hash, mask_account
from gateway.errors import InvalidInput
from gateway.plans.model import Payer
from gateway.plans.policy import Schedule
from gateway.splits.allocation import shares_json
from gateway.splits.funders import Funders
from gateway.splits.requests import RawShare, check_raw_shares

MAX_INSTALMENTS_PER_PLAN = 1200
MAX_INSTALMENTS_PER_MESSAGE = 20_000
EARLIEST_DUE = date(2000, 1, 1)
LATEST_DUE = date(2099, 12, 31)
# exactly YYYY-MM-DD: date.fromisoformat also takes ISO week dates ("2026-W50-1"), read as another day
ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class RejectCode(enum.StrEnum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"  # a field is bad (``field`` names it)
    ALREADY_EXISTS = "ALREADY_EXISTS"  # the id was used with other parameters
    FAILED_PRECONDITION = "FAILED_PRECONDITION"  # e.g. the plan is settled or cancelled


@dataclass(frozen=True)
class InstalmentSpec:
    instalment_id: str
    due_date: str  # YYYY-MM-DD, a business day of the lender's calendar
    amount: int
    currency: str
    has_amount: bool = True
    shares: tuple[RawShare, ...] = ()  # joint loans: the funders' shares of its withholds


@dataclass(frozen=True)
class PlanSpec:
    plan_id: str
    product: str
    account_no: str
    bank_code: str
    agreement_no: str = ""
    description: str = ""
    instalments: Sequence[InstalmentSpec] = ()


@dataclass(frozen=True)
class Rejection:
    plan_id: str
    instalment_id: str  # empty: the whole plan (all its instalments in this message)
    field: str
    problem: str
    code: RejectCode = RejectCode.INVALID_ARGUMENT
    instalments: int = 1  # how many instalments this rejection refused


@dataclass(frozen=True)
class NewInstalment:
    instalment_id: str
    due_date: date
    amount: int
    currency: str
    request_hash: str
    _field: str  # where it was in the request (see ``field``)
    first_due: datetime  # the moment of its first time point (naive UTC)
    last_day: date  # no attempt after this business day
    where: Callable[[], str] | None = None  # builds ``field`` when a refusal needs it
    split_shares: str | None = None  # joint loans: the checked shares (gateway.splits.allocation.shares_json)

    @property
    def field(self) -> str:
        """Where it was in the request, e.g. ``plans[3].instalments[7]``, for a later refusal."""
        return self.where() if self.where is not None else self._field


@dataclass
class NewPlan:
    plan_id: str
    product: str
    policy: str
    payer: Payer
    account_hash: str
    account_masked: str
    description: str
    request_hash: str
    field: str
    instalments: list[NewInstalment] = dataclasses.field(default_factory=list)
    account_sealed: bytes = b""  # set by the use case before it is stored


@dataclass(frozen=True)
class _PlanParams:
    product: str
    account_hash: str
    bank_code: str
    agreement_no: str
    description: str


def due_date(text: str, field_name: str) -> date:
    if not text:
        raise InvalidInput(field_name, "is required (YYYY-MM-DD)")
    try:
        value = date.fromisoformat(text) if ISO_DAY.fullmatch(text) else None
    except ValueError:
        value = None
    if value is None:
        raise InvalidInput(field_name, "must be a date YYYY-MM-DD")
    if not EARLIEST_DUE <= value <= LATEST_DUE:
        raise InvalidInput(field_name, f"must be from {EARLIEST_DUE} to {LATEST_DUE}")
    return value


def product_name(text: str, field_name: str = "product") -> str:
    return v.pattern(text, field_name, v.CHANNEL_ID, "1-64 chars of a-z 0-9 . _ -")


def check_plans(
    plans: Sequence[PlanSpec],
    *,
    caller: str,
    policy_for: Callable[[str, str], str | None],
    schedules: Mapping[str, Schedule],
    hash_key: bytes,
    prefix: str = "plans",
    funders: Funders | None = None,
    banks: frozenset[str] | None = None,
) -> tuple[list[NewPlan], list[Rejection]]:
    """Split a submission into valid plans and refusals (in request order).

    ``banks``: the bank codes a plan may name (the ones a ``Withhold`` may: gateway/validation.py
    ``accepted_banks``); None checks the form only.
    """
    total = sum(len(p.instalments) for p in plans)
    if total > MAX_INSTALMENTS_PER_MESSAGE:
        raise InvalidInput(prefix, f"carries {total} instalments; send at most {MAX_INSTALMENTS_PER_MESSAGE} a message")
    accepted: dict[str, NewPlan] = {}
    rejected: list[Rejection] = []
    seen_instalments: dict[str, str] = {}  # instalment id -> request hash, within this message
    days = {name: _Days(schedule) for name, schedule in schedules.items()}
    for i, spec in enumerate(plans):
        where = f"{prefix}[{i}]"
        try:
            plan = _check_plan(
                spec, where, caller=caller, policy_for=policy_for, schedules=schedules, hash_key=hash_key, banks=banks
            )
        except InvalidInput as bad:
            rejected.append(Rejection(spec.plan_id[:64], "", bad.field, bad.problem, instalments=len(spec.instalments)))
            continue
        earlier = accepted.get(plan.plan_id)
        if earlier is not None and earlier.request_hash != plan.request_hash:
            rejected.append(
                Rejection(
                    plan.plan_id,
                    "",
                    f"{where}.plan_id",
                    "appears earlier in this request with other parameters",
                    RejectCode.ALREADY_EXISTS,
                    instalments=len(spec.instalments),
                )
            )
            continue
        target = earlier or plan
        for j, item in enumerate(spec.instalments):

            def item_where(where: str = where, j: int = j) -> str:
                return f"{where}.instalments[{j}]"

            try:
                instalment = _check_instalment(item, item_where, plan.plan_id, days[plan.policy], funders)
            except InvalidInput as bad:
                rejected.append(Rejection(plan.plan_id, item.instalment_id[:64], bad.field, bad.problem))
                continue
            again = seen_instalments.get(instalment.instalment_id)
            if again is not None:
                if again != instalment.request_hash:
                    rejected.append(
                        Rejection(
                            plan.plan_id,
                            instalment.instalment_id,
                            f"{item_where()}.instalment_id",
                            "appears earlier in this request with other parameters",
                            RejectCode.ALREADY_EXISTS,
                        )
                    )
                continue  # the same instalment twice: once is enough
            seen_instalments[instalment.instalment_id] = instalment.request_hash
            target.instalments.append(instalment)
        if len(target.instalments) > MAX_INSTALMENTS_PER_PLAN:
            rejected.append(
                Rejection(
                    plan.plan_id,
                    "",
                    f"{where}.instalments",
                    f"a plan has at most {MAX_INSTALMENTS_PER_PLAN} instalments",
                    instalments=len(target.instalments),
                )
            )
            accepted.pop(plan.plan_id, None)
            continue
        accepted[plan.plan_id] = target
    # a plan whose every instalment was refused is not created empty
    return [p for p in accepted.values() if p.instalments], rejected


def _check_plan(
    spec: PlanSpec,
    where: str,
    *,
    caller: str,
    policy_for: Callable[[str, str], str | None],
    schedules: Mapping[str, Schedule],
    hash_key: bytes,
    banks: frozenset[str] | None = None,
) -> NewPlan:
    plan_id = v.request_id(spec.plan_id, f"{where}.plan_id")
    product = product_name(spec.product, f"{where}.product")
    policy = policy_for(caller, product)
    if policy is None or policy not in schedules:
        raise InvalidInput(f"{where}.product", f"no withholding policy is configured for product {product!r}")
    account_no = v.card_no(spec.account_no, f"{where}.account_no")
    if banks is None:
        bank_code = v.pattern(spec.bank_code, f"{where}.bank_code", v.BANK_CODE, "an upper-case bank code like ICBC")
    else:  # a Withhold's rule: the executor's withholds are never checked again
        bank_code = v.bank_code(spec.bank_code, banks, f"{where}.bank_code")
    agreement_no = v.pattern(
        spec.agreement_no, f"{where}.agreement_no", v.FLOW_NO, "a 26-character agreement number", required=False
    )
    description = v.text(spec.description, f"{where}.description", max_len=128)
    if not spec.instalments:
        raise InvalidInput(f"{where}.instalments", "at least one instalment is required")
    acct = account_hash(hash_key, account_no)
    params = _PlanParams(product, acct, bank_code, agreement_no, description)
    return NewPlan(
        plan_id=plan_id,
        product=product,
        policy=policy,
        payer=Payer(account_no, bank_code, agreement_no),
        account_hash=acct,
        account_masked=mask_account(account_no),
        description=description,
        request_hash=v.canonical_hash("PLAN", params),
        field=where,
    )


def instalment_hash(plan_id: str, due: date, amount: int, currency: str, split_shares: str | None = None) -> str:
    """The canonical request hash of an instalment: its plan, due date, amount, currency (and shares, if any).

    Written out by hand rather than through ``canonical_hash`` (a book carries millions of them);
    the fields cannot contain the separator (ids are ``[A-Za-z0-9._:-]``). Without shares the
    hash is the one instalments had before splits existed.
    """
    text = f"INSTALMENT\x1f{plan_id}\x1f{due.isoformat()}\x1f{amount}\x1f{currency}"
    if split_shares is not None:
        text += f"\x1f{split_shares}"
    return hashlib.sha256(text.encode()).hexdigest()


def _parse_due(text: str) -> date | None:
    if not ISO_DAY.fullmatch(text):
        return None
    try:
        value = date.fromisoformat(text)
    except ValueError:
        return None
    return value if EARLIEST_DUE <= value <= LATEST_DUE else None


class _Days:
    """First due moments and last days of one schedule, computed once per due date."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self._cache: dict[date, tuple[datetime, date]] = {}

    def of(self, due: date) -> tuple[datetime, date]:
        found = self._cache.get(due)
        if found is None:
            found = self._cache[due] = (self.schedule.first_due(due), self.schedule.last_day(due))
        return found


def _check_instalment(
    item: InstalmentSpec, where: Callable[[], str], plan_id: str, days: _Days, funders: Funders | None = None
) -> NewInstalment:
    """One instalment; ``where()`` names it in the request (built only for a refusal)."""
    due = _parse_due(item.due_date)
    ok = (
        due is not None
        and v.REQUEST_ID.fullmatch(item.instalment_id) is not None
        and item.has_amount
        and 0 < item.amount <= v.MAX_AMOUNT
        and item.currency in CURRENCIES
    )
    if not ok or due is None:  # the slow path says what is wrong, with the field's name
        at = where()
        v.request_id(item.instalment_id, f"{at}.instalment_id")
        due = due_date(item.due_date, f"{at}.due_date")
        v.money(item.amount, item.currency, field=f"{at}.amount", present=item.has_amount)
    first_due, last_day = days.of(due)
    split = None
    if item.shares:
        shares = check_raw_shares(item.shares, item.amount, field=f"{where()}.shares")
        assert shares is not None
        if funders is not None:
            funders.check(shares, item.currency, field=f"{where()}.shares")
        split = shares_json(shares)
    return NewInstalment(
        item.instalment_id,
        due,
        item.amount,
        item.currency,
        instalment_hash(plan_id, due, item.amount, item.currency, split),
        "",
        first_due,
        last_day,
        where,
        split,
    )
