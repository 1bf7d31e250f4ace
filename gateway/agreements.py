"""Agreement use cases: sign (SMS sent), confirm (with the code), revoke, list; and their recovery.

Signing is idempotent on (caller, request_id) like flows. The card and ID
numbers go to the channel once and are stored only masked plus a keyed hash.

Each channel call and the local update that records its answer run in one
task the RPC cannot cancel (as for flows): a client that hangs up, or a
deadline that passes, between the channel's answer and the update would
otherwise leave the agreement ACTIVE at the channel and awaiting here.

A confirm is recorded as sent (``confirm_sent_at``) before the channel is
called. An agreement still AWAITING_CONFIRMATION ``review_after_s`` after a
confirm was sent (the process died between the two, or the channel could not
be reached after the request left) is marked ``needs_review`` by the sweep
(:meth:`AgreementService.recover`, at start and every ``sweep_interval_s``),
with an ERROR log line and a metric: the channel contract has no query for an
agreement's state, so the gateway does not guess it is active. The caller
confirming again with the code completes it (the channels' confirm answers
the same agreement again) and clears the mark; otherwise an operator checks
with the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

from channels.contract import ChannelRejected, ChannelUnavailable, Operation, SignRequest
from channels.registry import ChannelRegistry
from gateway import background, metrics
from gateway.domain import AgreementStatus, account_hash, mask_account, mask_name
from gateway.errors import IdempotencyConflict, InvalidInput, NotFound, PreconditionFailed, Unavailable
from gateway.ports import AgreementStore
from gateway.store.rows import AgreementRow, Existing, utcnow
from gateway.validation import canonical_hash

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class SignParams:
    channel: str
    account_no: str
    holder_name: str
    id_no: str
    phone: str
    bank_code: str


class AgreementService:
    """The agreement use cases; ``start()`` / ``stop()`` run the recovery sweep and drain channel calls."""

    def __init__(
        self,
        store: AgreementStore,
        registry: ChannelRegistry,
        hash_key: bytes,
        *,
        review_after_s: float = 300.0,
        sweep_interval_s: float = 60.0,
    ) -> None:
        self.store = store
        self.registry = registry
        self.hash_key = hash_key
        self.review_after_s = review_after_s  # longer than any channel call may take
        self.sweep_interval_s = sweep_interval_s
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweep: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Recover once, then sweep every ``sweep_interval_s``. Idempotent."""
        if self._sweep is not None:
            return
        try:
            await self.recover()
        except Exception as exc:  # the sweep tries again; start-up goes on
            log.warning("agreement recovery failed at start: %s", type(exc).__name__)
        self._sweep = asyncio.create_task(self._sweep_loop(), name="agreement-sweep")

    async def stop(self, grace_s: float = 5.0) -> int:
        """Stop the sweep; wait up to ``grace_s`` for channel calls in flight, cancel the rest (how many)."""
        sweep, self._sweep = self._sweep, None
        if sweep is not None:
            sweep.cancel()
            await asyncio.gather(sweep, return_exceptions=True)
        return await background.drain(self._tasks, grace_s)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            with contextlib.suppress(Exception):
                await self.recover()

    async def recover(self) -> int:
        """Mark for review the agreements left awaiting ``review_after_s`` after a confirm was sent; how many."""
        cutoff = utcnow() - timedelta(seconds=self.review_after_s)
        marked = 0
        for row in await self.store.unconfirmed_since(cutoff):
            if await self.store.mark_needs_review(row):
                marked += 1
                metrics.AGREEMENTS_TO_REVIEW.labels(channel=row.channel).inc()
                log.error(
                    "agreement still awaiting confirmation after a confirm was sent; check it with the channel",
                    extra={"agreement_no": row.agreement_no, "channel": row.channel},
                )
        return marked

    async def _protected(self, work: Callable[[], Awaitable[T]], name: str) -> T:
        """Run ``work`` (a channel call and the update that records its answer) in a task the RPC cannot cancel."""
        task: asyncio.Task[T] = asyncio.get_running_loop().create_task(_run(work), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_retrieve)  # a caller that has gone never reads it
        return await asyncio.shield(task)

    # --- use cases -------------------------------------------------------------------

    def _pick_channel(self, params: SignParams) -> str:
        if params.channel:
            if params.channel not in self.registry:
                raise InvalidInput("channel", f"unknown channel {params.channel!r}")
            ch = self.registry.get(params.channel)
            if Operation.AGREEMENT not in ch.operations:
                raise PreconditionFailed(f"channel: {params.channel} does not sign withholding agreements")
            return params.channel
        for channel_id, ch in self.registry.items():
            if Operation.AGREEMENT in ch.operations and (ch.banks is None or params.bank_code in ch.banks):
                return channel_id
        raise PreconditionFailed(f"bank_code: no channel signs agreements for bank {params.bank_code}")

    async def sign(self, caller: str, request_id: str, params: SignParams) -> AgreementRow:
        acct = account_hash(self.hash_key, params.account_no)
        # the whole phone, keyed like the numbers (the SMS goes to it); before, only its last 4 digits
        # were hashed, which a replay of a request recorded then still matches (``legacy``)
        hashed = SignParams(
            params.channel,
            acct,
            params.holder_name,
            account_hash(self.hash_key, params.id_no),
            account_hash(self.hash_key, params.phone),
            params.bank_code,
        )
        request_hash = canonical_hash("SIGN", hashed)
        legacy = canonical_hash("SIGN", replace(hashed, phone=params.phone[-4:]))
        existing = await self.store.by_request_id(caller, request_id)
        if existing is not None:
            return self._replay(existing, request_hash, legacy)
        channel_id = self._pick_channel(params)
        creation = await self.store.create(
            caller=caller,
            request_id=request_id,
            request_hash=request_hash,
            channel=channel_id,
            account_hash=acct,
            account_masked=mask_account(params.account_no),
            holder_masked=mask_name(params.holder_name),
            bank_code=params.bank_code,
        )
        if isinstance(creation, Existing):  # a concurrent request with the same request_id got there first
            return self._replay(creation.row, request_hash, legacy)
        row = creation.row
        return await self._protected(lambda: self._start_signing(row, params), f"sign-{row.agreement_no}")

    async def _start_signing(self, row: AgreementRow, params: SignParams) -> AgreementRow:
        channel = self.registry.get(row.channel)
        try:
            started = await channel.sign_agreement(
                SignRequest(
                    sign_order_no=row.agreement_no,
                    account_no=params.account_no,
                    holder_name=params.holder_name,
                    id_no=params.id_no,
                    phone=params.phone,
                    bank_code=params.bank_code,
                )
            )
        except ChannelRejected as exc:
            await self.store.transition(row, AgreementStatus.SIGN_FAILED, failure_code=exc.code[:64])
            return row
        except ChannelUnavailable as exc:
            await self.store.transition(row, AgreementStatus.SIGN_FAILED, failure_code="CHANNEL_UNAVAILABLE")
            raise Unavailable(f"channel {row.channel} unavailable; retry with a new request_id") from exc
        await self.store.set_sign_ref(row, started.sign_ref)
        return row

    @staticmethod
    def _replay(existing: AgreementRow, request_hash: str, legacy: str) -> AgreementRow:
        if existing.request_hash not in (request_hash, legacy):
            raise IdempotencyConflict(
                f"request_id {existing.request_id} was already used with different parameters "
                f"(agreement {existing.agreement_no})"
            )
        return existing

    async def confirm(self, caller: str, agreement_no: str, sms_code: str) -> AgreementRow:
        row = await self._get(caller, agreement_no)
        if row.status is AgreementStatus.ACTIVE:
            return row  # confirming twice is harmless
        if row.status is not AgreementStatus.AWAITING_CONFIRMATION or not row.sign_ref:
            raise PreconditionFailed(f"agreement_no: agreement is {row.status.value}, not awaiting confirmation")
        return await self._protected(lambda: self._confirm(caller, row, sms_code), f"confirm-{agreement_no}")

    async def _confirm(self, caller: str, row: AgreementRow, sms_code: str) -> AgreementRow:
        channel = self.registry.get(row.channel)
        await self.store.mark_confirm_sent(row)  # record before call: recovery finds what this leaves behind
        try:
            confirmed = await channel.confirm_agreement(row.sign_ref, sms_code)
        except ChannelRejected as exc:
            await self.store.clear_confirm_sent(row)  # refused: nothing is pending at the channel
            raise PreconditionFailed(f"sms_code: rejected by the channel ({exc.code})") from exc
        except ChannelUnavailable as exc:
            # the request may have reached the channel: the mark stays, a retry (or the sweep) settles it
            raise Unavailable(f"channel {row.channel} unavailable; retry") from exc
        if not await self.store.transition(row, AgreementStatus.ACTIVE, agreement_ref=confirmed.agreement_ref):
            row = await self._get(caller, row.agreement_no)
        return row

    async def revoke(self, caller: str, agreement_no: str) -> AgreementRow:
        row = await self._get(caller, agreement_no)
        if row.status is AgreementStatus.REVOKED:
            return row
        if row.status not in (AgreementStatus.ACTIVE, AgreementStatus.AWAITING_CONFIRMATION):
            raise PreconditionFailed(f"agreement_no: agreement is {row.status.value}")
        return await self._protected(lambda: self._revoke(caller, row), f"revoke-{agreement_no}")

    async def _revoke(self, caller: str, row: AgreementRow) -> AgreementRow:
        if row.status is AgreementStatus.ACTIVE:
            try:
                await self.registry.get(row.channel).revoke_agreement(row.agreement_ref)
            except ChannelRejected as exc:
                log.warning("channel refused revoke: %s", exc.code, extra={"channel": row.channel})
                if exc.code not in {"AGREEMENT_NOT_FOUND", "AGREEMENT_INVALID"}:
                    raise PreconditionFailed(f"agreement_no: the channel refused to revoke ({exc.code})") from exc
            except ChannelUnavailable as exc:
                raise Unavailable(f"channel {row.channel} unavailable; retry") from exc
        if not await self.store.transition(row, AgreementStatus.REVOKED):
            row = await self._get(caller, row.agreement_no)
        return row

    async def list(self, caller: str, account_no: str, after_id: int, limit: int) -> list[AgreementRow]:
        acct = account_hash(self.hash_key, account_no) if account_no else None
        return await self.store.list(caller, account_hash=acct, after_id=after_id, limit=limit)

    async def _get(self, caller: str, agreement_no: str) -> AgreementRow:
        row = await self.store.by_no(caller, agreement_no)
        if row is None:
            raise NotFound(f"agreement_no: no agreement {agreement_no}")
        return row


async def _run(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if not isinstance(exc, PreconditionFailed | Unavailable):
            log.warning("agreement task %s ended with %s", task.get_name(), type(exc).__name__)
