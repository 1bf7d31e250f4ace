"""Agreement use cases: sign (SMS sent), confirm (with the code), revoke, list.

Signing is idempotent on (caller, request_id) like flows. The card and ID
numbers go to the channel once and are stored only masked plus a keyed hash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from channels.contract import ChannelRejected, ChannelUnavailable, Operation, SignRequest
from channels.registry import ChannelRegistry
from gateway.domain import AgreementStatus, account_hash, mask_account, mask_name
from gateway.errors import IdempotencyConflict, InvalidInput, NotFound, PreconditionFailed, Unavailable
from gateway.ports import AgreementStore
from gateway.store.rows import AgreementRow, Existing
from gateway.validation import canonical_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignParams:
    channel: str
    account_no: str
    holder_name: str
    id_no: str
    phone: str
    bank_code: str


class AgreementService:
    def __init__(self, store: AgreementStore, registry: ChannelRegistry, hash_key: bytes) -> None:
        self.store = store
        self.registry = registry
        self.hash_key = hash_key

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
        hashed = SignParams(
            params.channel,
            acct,
            params.holder_name,
            account_hash(self.hash_key, params.id_no),
            params.phone[-4:],
            params.bank_code,
        )
        request_hash = canonical_hash("SIGN", hashed)
        existing = await self.store.by_request_id(caller, request_id)
        if existing is not None:
            return self._replay(existing, request_hash)
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
            return self._replay(creation.row, request_hash)
        row = creation.row
        channel = self.registry.get(channel_id)
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
            raise Unavailable(f"channel {channel_id} unavailable; retry with a new request_id") from exc
        await self.store.set_sign_ref(row, started.sign_ref)
        return row

    @staticmethod
    def _replay(existing: AgreementRow, request_hash: str) -> AgreementRow:
        if existing.request_hash != request_hash:
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
        channel = self.registry.get(row.channel)
        try:
            confirmed = await channel.confirm_agreement(row.sign_ref, sms_code)
        except ChannelRejected as exc:
            raise PreconditionFailed(f"sms_code: rejected by the channel ({exc.code})") from exc
        except ChannelUnavailable as exc:
            raise Unavailable(f"channel {row.channel} unavailable; retry") from exc
        if not await self.store.transition(row, AgreementStatus.ACTIVE, agreement_ref=confirmed.agreement_ref):
            row = await self._get(caller, agreement_no)
        return row

    async def revoke(self, caller: str, agreement_no: str) -> AgreementRow:
        row = await self._get(caller, agreement_no)
        if row.status is AgreementStatus.REVOKED:
            return row
        if row.status is AgreementStatus.ACTIVE:
            try:
                await self.registry.get(row.channel).revoke_agreement(row.agreement_ref)
            except ChannelRejected as exc:
                log.warning("channel refused revoke: %s", exc.code, extra={"channel": row.channel})
                if exc.code not in {"AGREEMENT_NOT_FOUND", "AGREEMENT_INVALID"}:
                    raise PreconditionFailed(f"agreement_no: the channel refused to revoke ({exc.code})") from exc
            except ChannelUnavailable as exc:
                raise Unavailable(f"channel {row.channel} unavailable; retry") from exc
        elif row.status is not AgreementStatus.AWAITING_CONFIRMATION:
            raise PreconditionFailed(f"agreement_no: agreement is {row.status.value}")
        if not await self.store.transition(row, AgreementStatus.REVOKED):
            row = await self._get(caller, agreement_no)
        return row

    async def list(self, caller: str, account_no: str, after_id: int, limit: int) -> list[AgreementRow]:
        acct = account_hash(self.hash_key, account_no) if account_no else None
        return await self.store.list(caller, account_hash=acct, after_id=after_id, limit=limit)

    async def _get(self, caller: str, agreement_no: str) -> AgreementRow:
        row = await self.store.by_no(caller, agreement_no)
        if row is None:
            raise NotFound(f"agreement_no: no agreement {agreement_no}")
        return row
