"""The standard rich error model on every error the gateway answers with.

Besides the status code and its text, each error carries a ``google.rpc.Status``
in the ``grpc-status-details-bin`` trailer, so a client in any language can
branch without parsing the text:

* ``ErrorInfo``: a stable ``reason`` (docs/ERRORS.md lists them all) and
  ``domain = "paygate"``; for a bad field also ``metadata["field"]``;
* ``BadRequest`` (INVALID_ARGUMENT only): one field violation naming the field.

In Python: ``grpc_status.rpc_status.from_call(err)`` on the ``grpc.RpcError``
(or ``grpc.aio.AioRpcError``), then unpack ``details`` (see docs/ERRORS.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc
from google.rpc.error_details_pb2 import BadRequest, ErrorInfo
from google.rpc.status_pb2 import Status

from gateway.api.status import reason_of, to_status
from gateway.domain import scrub
from gateway.errors import InvalidInput

__all__ = ["DETAILS_KEY", "DOMAIN", "RichError", "for_exception"]

DOMAIN = "paygate"
DETAILS_KEY = "grpc-status-details-bin"  # grpc_status._common.GRPC_DETAILS_METADATA_KEY


@dataclass(frozen=True)
class RichError:
    """One error answer: code, caller-facing text, reason and (for a bad field) the field."""

    code: grpc.StatusCode
    message: str
    reason: str
    field: str = ""
    field_problem: str = ""

    def status(self) -> Status:
        """The ``google.rpc.Status``; its code and message equal the RPC's (``from_call`` checks both)."""
        out = Status(code=self.code.value[0], message=self.message)
        info = ErrorInfo(reason=self.reason, domain=DOMAIN)
        if self.field:
            info.metadata["field"] = self.field
        out.details.add().Pack(info)
        if self.field:
            violation = BadRequest.FieldViolation(field=self.field, description=self.field_problem)
            out.details.add().Pack(BadRequest(field_violations=[violation]))
        return out

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return ((DETAILS_KEY, self.status().SerializeToString()),)

    async def abort(self, context: grpc.aio.ServicerContext[object, object]) -> None:
        """End the RPC with this error (raises, as ``context.abort`` does)."""
        await context.abort(self.code, self.message, trailing_metadata=self.trailing_metadata())


def for_exception(exc: BaseException, keep: Iterable[str] = ()) -> RichError:
    """The answer to an exception raised by a servicer (``keep``: the caller's identifiers, kept as sent)."""
    keep = tuple(keep)
    code, message = to_status(exc, keep)
    if isinstance(exc, InvalidInput):
        return RichError(code, message, reason_of(exc), exc.field, scrub(exc.problem, keep))
    return RichError(code, message, reason_of(exc))
