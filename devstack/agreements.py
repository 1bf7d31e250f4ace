"""Binding a test card as a lending system does: SignAgreement, the SMS the bank "sent", ConfirmAgreement."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from paygate.v1 import gateway_pb2 as pb

if TYPE_CHECKING:
    from paygate.v1.gateway_pb2_grpc import PaymentGatewayAsyncStub

# The borrower every development stack signs for (the gateway masks and hashes these).
BORROWER = {"holder_name": "王小明", "id_no": "11010519491231002X", "phone": "13800138000"}


async def bind_card(
    stub: PaymentGatewayAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    *,
    request_id: str,
    channel: str,
    card: str,
    sms_code: Callable[[str], str],
    bank_code: str = "ICBC",
    timeout: float | None = None,
) -> pb.Agreement:
    """Sign an agreement for ``card`` with ``channel`` and confirm it; returns the confirmed agreement.

    ``sms_code(phone)`` reads the code of the last SMS the simulated bank sent to the
    borrower's phone, as the borrower would (blocking; run in a thread): e.g.
    ``SandboxProcess.last_sms_code`` or ``lambda phone: simulator.last_sms(phone).code``.
    """
    signed = await stub.SignAgreement(
        pb.SignAgreementRequest(
            request_id=request_id, channel=channel, account_no=card, bank_code=bank_code, **BORROWER
        ),
        metadata=metadata,
        timeout=timeout,
    )
    code = await asyncio.to_thread(sms_code, BORROWER["phone"])
    return await stub.ConfirmAgreement(
        pb.ConfirmAgreementRequest(agreement_no=signed.agreement_no, sms_code=code), metadata=metadata, timeout=timeout
    )
