"""How an instalment changes: each use case's step as a pure function from the row before to the row after.

The store writes the row after with a compare-and-set on the row before's *guard*
(status, event sequence, claim token, attempt request id, closing; see
``gateway/store/plans.py``), together with the attempt row and the event the step produces, in
one transaction. A concurrent change to any guard field makes the write change nothing; the
use case reads the row again and decides again. Pause flags and the amount are not part of the
guard: pausing never conflicts with a running withhold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime

from gateway.errors import PreconditionFailed
from gateway.plans.model import (
    CLOSED,
    WINDOW_PASSED,
    Closing,
    InstalmentEvent,
    InstalmentRow,
    InstalmentStatus,
    OutcomeKind,
)
from gateway.plans.policy import Retry, Schedule, Stop

_CLOSE_TO = {Closing.SETTLE: InstalmentStatus.SETTLED, Closing.CANCEL: InstalmentStatus.CANCELLED}
_CLOSE_EVENT = {Closing.SETTLE: OutcomeKind.SETTLED, Closing.CANCEL: OutcomeKind.CANCELLED}


@dataclass(frozen=True)
class Step:
    """The row after a step, and the event it produces (None: no event)."""

    after: InstalmentRow
    event: InstalmentEvent | None = None


def _released(row: InstalmentRow, now: datetime, **changes: object) -> InstalmentRow:
    """No longer held by any replica, with ``changes``."""
    return dataclasses.replace(
        row,
        run_id=None,
        claim_owner="",
        claim_token="",
        lease_until=None,
        attempt_request_id="",
        attempt_day=None,
        attempt_time_point="",
        updated_at=now,
        **changes,  # type: ignore[arg-type]
    )


def _with_event(after: InstalmentRow, event: InstalmentEvent) -> Step:
    bumped = dataclasses.replace(after, event_seq=after.event_seq + 1)
    return Step(bumped, dataclasses.replace(event, instalment=bumped))


def counted(row: InstalmentRow, day: date) -> InstalmentRow:
    """``row`` with one more attempt on business day ``day`` (what going ahead with a withhold records)."""
    on_day = row.attempts_on_day + 1 if row.attempts_day == day else 1
    return dataclasses.replace(row, attempts=row.attempts + 1, attempts_day=day, attempts_on_day=on_day)


def release(row: InstalmentRow, now: datetime) -> Step:
    """Back to SCHEDULED as it was: nothing was sent (run paused, no token in time, lease taken over)."""
    return Step(_released(row, now, status=InstalmentStatus.SCHEDULED))


def after_result(
    row: InstalmentRow,
    schedule: Schedule,
    *,
    succeeded: bool,
    code: str,
    now: datetime,
    flow_id: int | None = None,
    flow_no: str = "",
) -> Step:
    """The instalment after its attempt (counted in ``row``) at ``row.attempt_day`` ``row.attempt_time_point``.

    A closing asked for while the withhold was in flight applies now: a success still counts
    (the money was taken); a failure closes the instalment as asked instead of retrying.
    """
    day, point = row.attempt_day, row.attempt_time_point
    assert day is not None and point
    base = InstalmentEvent(
        OutcomeKind.SUCCEEDED,
        row,
        business_day=day,
        time_point=point,
        request_id=row.attempt_request_id,
        flow_no=flow_no,
        flow_id=flow_id or 0,
    )
    if succeeded:
        after = _released(row, now, status=InstalmentStatus.SUCCEEDED, flow_id=flow_id, finished_at=now, last_code="")
        return _with_event(after, base)
    if row.closing is not Closing.NONE:
        after = _released(row, now, status=_CLOSE_TO[row.closing], flow_id=flow_id, finished_at=now, last_code=code)
        return _with_event(after, dataclasses.replace(base, kind=_CLOSE_EVENT[row.closing], code=code))
    decision = schedule.after_failure(
        code,
        day=day,
        time_point=point,
        attempts_on_day=row.attempts_on_day,
        attempts=row.attempts,
        last_day=row.last_day,
    )
    if isinstance(decision, Retry):
        after = _released(
            row, now, status=InstalmentStatus.SCHEDULED, flow_id=flow_id, last_code=code, next_attempt_at=decision.at
        )
        event = dataclasses.replace(
            base,
            kind=OutcomeKind.RETRY_SCHEDULED,
            code=code,
            next_attempt_at=decision.at,
            next_business_day=decision.business_day,
            next_time_point=decision.time_point,
        )
        return _with_event(after, event)
    return stop(row, decision, now, flow_id=flow_id, event=base)


def stop(
    row: InstalmentRow,
    decision: Stop,
    now: datetime,
    *,
    flow_id: int | None = None,
    event: InstalmentEvent | None = None,
) -> Step:
    after = _released(
        row,
        now,
        status=InstalmentStatus.STOPPED,
        flow_id=flow_id if flow_id is not None else row.flow_id,
        last_code=decision.code,
        stop_reason=decision.reason,
        finished_at=now,
    )
    base = event or InstalmentEvent(OutcomeKind.STOPPED, row)
    return _with_event(after, dataclasses.replace(base, kind=OutcomeKind.STOPPED, code=decision.code))


def window_passed(row: InstalmentRow, now: datetime) -> Step:
    """Claimed after its last day (the runs of its days were missed): stopped without an attempt."""
    return stop(row, Stop(WINDOW_PASSED, WINDOW_PASSED), now)


def next_day(row: InstalmentRow, schedule: Schedule, day: date, now: datetime) -> Step:
    """Claimed on a day that already had its attempts (a re-run): due at the next day's first time point."""
    following = schedule.next_time_point(day, schedule.policy.labels[-1])
    return Step(_released(row, now, status=InstalmentStatus.SCHEDULED, next_attempt_at=schedule.moment(*following)))


def track(row: InstalmentRow, flow_id: int, now: datetime) -> Step:
    """The withhold is PROCESSING: remember its flow; the result is picked up when the flow ends."""
    return Step(dataclasses.replace(row, flow_id=flow_id, lease_until=None, updated_at=now))


def close(row: InstalmentRow, closing: Closing, now: datetime) -> Step | None:
    """Settle or cancel one instalment; None when there is nothing to do (already closed as asked, or paid).

    In flight: the closing is recorded and applied when the withhold's result is known (it
    cannot be recalled). Raises PreconditionFailed for a contradiction (cancel a settled one).
    """
    target = _CLOSE_TO[closing]
    if row.status is target or row.status is InstalmentStatus.SUCCEEDED:
        return None
    if row.status in CLOSED:
        raise PreconditionFailed(
            f"instalment {row.instalment_id} is {row.status.value}; it cannot become {target.value}"
        )
    if row.status is InstalmentStatus.IN_FLIGHT:
        if row.closing is closing:
            return None
        return Step(dataclasses.replace(row, closing=closing, updated_at=now))
    after = _released(row, now, status=target, finished_at=now)
    return _with_event(after, InstalmentEvent(_CLOSE_EVENT[closing], after))


def amend(row: InstalmentRow, amount: int, currency: str, now: datetime) -> Step:
    """Lower the amount still to collect; only while no withhold is claimed or in flight for it."""
    if currency != row.currency:
        raise PreconditionFailed(f"amount.currency: must be {row.currency}, the instalment's currency")
    if row.status in (InstalmentStatus.CLAIMED, InstalmentStatus.IN_FLIGHT):
        state = "in flight" if row.status is InstalmentStatus.IN_FLIGHT else "about to start"
        raise PreconditionFailed(f"instalment {row.instalment_id} has a withhold {state}; amend it after its result")
    if row.status in CLOSED:
        raise PreconditionFailed(f"instalment {row.instalment_id} is {row.status.value}; nothing is left to amend")
    if amount >= row.amount:
        raise PreconditionFailed(f"amount.amount: must be below the current {row.amount} (amend lowers the amount)")
    return Step(dataclasses.replace(row, amount=amount, updated_at=now))
