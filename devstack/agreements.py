"""Binding a test card as a lending system does: SignAgreement, the SMS code the bank "sent", ConfirmAgreement."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiomysql

from paygate.v1 import gateway_pb2 as pb

if TYPE_CHECKING:
    from paygate.v1.gateway_pb2_grpc import PaymentGatewayAsyncStub

# The borrower every development stack signs for (the gateway masks and hashes these).
BORROWER = {"holder_name": "王小明", "id_no": "11010519491231002X", "phone": "13800138000"}


async def sign_ref_of(database: str, agreement_no: str) -> str:
    """The channel's signing reference of an agreement, from the gateway's database (simulators key SMS codes by it)."""
    conn = await aiomysql.connect(host="127.0.0.1", user="root", password="", db=database, autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT sign_ref FROM agreements WHERE agreement_no=%s", (agreement_no,))
            (sign_ref,) = await cur.fetchone()
    finally:
        conn.close()
    return str(sign_ref)


async def bind_card(
    stub: PaymentGatewayAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    *,
    request_id: str,
    channel: str,
    card: str,
    database: str,
    sms_code: Callable[[str], str],
    bank_code: str = "ICBC",
    timeout: float | None = None,
) -> pb.Agreement:
    """Sign an agreement for ``card`` with ``channel`` and confirm it; returns the confirmed agreement.

    ``sms_code(sign_ref)`` reads the code the simulated bank sent (blocking; run in a thread).
    """
    signed = await stub.SignAgreement(
        pb.SignAgreementRequest(
            request_id=request_id, channel=channel, account_no=card, bank_code=bank_code, **BORROWER
        ),
        metadata=metadata,
        timeout=timeout,
    )
    code = await asyncio.to_thread(sms_code, await sign_ref_of(database, signed.agreement_no))
    return await stub.ConfirmAgreement(
        pb.ConfirmAgreementRequest(agreement_no=signed.agreement_no, sms_code=code), metadata=metadata, timeout=timeout
    )
