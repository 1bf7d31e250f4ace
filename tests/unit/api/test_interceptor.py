"""The gateway interceptor over a real grpc.aio channel: credentials before decoding, the rich error model,
the real status of cancelled and expired calls in the log line and the request counter."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gateway.api.auth import GatewayInterceptor, LogBudget
from gateway.config import Secret
from gateway.errors import IdempotencyConflict, InvalidInput, NoRoute
from gateway.logs import publish_flow_no
from gateway.metrics import REGISTRY
from gateway.security.principals import CallerTable, Principals
from paygate.v1 import gateway_pb2, gateway_pb2_grpc

TOKEN = "loans-token-0123456789"
FLOW_NO = "01JD3Z8X5Q7R2M4N6P8S0T1V3W"
WITHHOLD = "/paygate.v1.PaymentGateway/Withhold"
GARBAGE = b"\xff\xff\xff\xff"  # field 31 with wire type 7: not a protobuf message


class FakeGateway(gateway_pb2_grpc.PaymentGatewayServicer):
    """Stands in for the use cases: each method does one thing the interceptor must handle."""

    def __init__(self) -> None:
        self.withhold_started = asyncio.Event()

    async def Withhold(self, request: gateway_pb2.WithholdRequest, context: object) -> gateway_pb2.Flow:
        # the flow is recorded, then the wait outlives the caller's patience
        publish_flow_no(FLOW_NO)
        self.withhold_started.set()
        await asyncio.sleep(30)
        return gateway_pb2.Flow(flow_no=FLOW_NO)

    async def GetFlow(self, request: gateway_pb2.GetFlowRequest, context: object) -> gateway_pb2.Flow:
        if request.request_id == "bad":
            raise InvalidInput("request_id", "must be 1-64 characters of A-Z a-z 0-9 . _ : -")
        if request.request_id == "reused":
            raise IdempotencyConflict("request_id 6222020212345678 was already used with different parameters")
        raise NoRoute(
            "no channel available for payout: bank-a: position (available 1200 < 5000)",
            [("bank-a", "position", "available 1200 < 5000")],
        )

    async def ListAgreements(
        self, request: gateway_pb2.ListAgreementsRequest, context: object
    ) -> gateway_pb2.ListAgreementsResponse:
        return gateway_pb2.ListAgreementsResponse()


@dataclass
class Server:
    channel: grpc.aio.Channel
    fake: FakeGateway

    @property
    def stub(self) -> gateway_pb2_grpc.PaymentGatewayStub:
        return gateway_pb2_grpc.PaymentGatewayStub(self.channel)

    def raw(self, method: str = WITHHOLD) -> grpc.aio.UnaryUnaryMultiCallable:
        """A generic unary call that sends bytes as they are (identity serializers)."""
        return self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    fake = FakeGateway()
    srv = grpc.aio.server(
        interceptors=[GatewayInterceptor(Principals({"loans": CallerTable(token=Secret(TOKEN))}, {}))]
    )
    gateway_pb2_grpc.add_PaymentGatewayServicer_to_server(fake, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Server(channel, fake)
    finally:
        await channel.close()
        await srv.stop(0)


def md(scheme: str = "Bearer", token: str = TOKEN) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"{scheme} {token}"),)


def count(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("paygate_grpc_server_requests_total", {"method": method, "code": code}) or 0.0


async def rpc_line(caplog: pytest.LogCaptureFixture, method: str, timeout: float = 5.0) -> logging.LogRecord:
    """The interceptor's line for ``method`` (the server may write it after the client has returned)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        lines = [r for r in caplog.records if r.name == "paygate.rpc" and getattr(r, "method", "") == method]
        if lines:
            return lines[-1]
        assert asyncio.get_running_loop().time() < deadline, "no rpc log line"
        await asyncio.sleep(0.02)


# --- undecodable requests -------------------------------------------------------------------


async def test_anonymous_garbage_is_unauthenticated_not_a_decode_error(server: Server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.raw()(GARBAGE)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.raw()(GARBAGE, metadata=md(token="wrong-token"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _reason(err.value) == "UNAUTHENTICATED"


async def test_authenticated_garbage_is_invalid_argument_with_a_rate_limited_warning(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    before = count("Withhold", "INVALID_ARGUMENT")
    for _ in range(25):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await server.raw()(GARBAGE, metadata=md())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid protobuf message" in (err.value.details() or "")
        assert _reason(err.value) == "REQUEST_UNDECODABLE"
    # the server counts a call after its abort has answered the client: give the last one a moment
    for _ in range(100):
        if count("Withhold", "INVALID_ARGUMENT") >= before + 25:
            break
        await asyncio.sleep(0.02)
    assert count("Withhold", "INVALID_ARGUMENT") == before + 25
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert 1 <= len(warnings) <= GatewayInterceptor.undecodable_log_per_minute
    # a valid request on the same method still decodes
    assert await server.stub.ListAgreements(gateway_pb2.ListAgreementsRequest(), metadata=md()) is not None


def test_log_budget_drops_beyond_the_limit_and_says_how_many() -> None:
    now = [0.0]
    budget = LogBudget(3, clock=lambda: now[0])
    assert [budget.take() for _ in range(5)] == [0, 0, 0, None, None]
    now[0] = 61.0
    assert budget.take() == 2  # the first line of the next minute tells what was dropped
    assert budget.take() == 0


# --- credentials ------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
async def test_bearer_scheme_is_case_insensitive(server: Server, scheme: str) -> None:
    await server.stub.ListAgreements(gateway_pb2.ListAgreementsRequest(), metadata=md(scheme))


@pytest.mark.parametrize("header", ["Basic " + TOKEN, TOKEN, "Bearer", "Bearer" + TOKEN])
async def test_other_schemes_are_refused(server: Server, header: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.stub.ListAgreements(gateway_pb2.ListAgreementsRequest(), metadata=(("authorization", header),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- the rich error model --------------------------------------------------------------------


def _details(err: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.BadRequest | None]:
    status = rpc_status.from_call(err)
    assert status is not None, "no grpc-status-details-bin trailer"
    info, bad = None, None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
    assert info is not None
    return info, bad


def _reason(err: grpc.aio.AioRpcError) -> str:
    return _details(err)[0].reason


async def test_a_client_branches_on_reason_and_field(server: Server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.stub.GetFlow(gateway_pb2.GetFlowRequest(request_id="bad"), metadata=md())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad = _details(err.value)
    assert (info.reason, info.domain, info.metadata["field"]) == ("FIELD_INVALID", "paygate", "request_id")
    assert bad is not None
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("request_id", "must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    ]

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.stub.GetFlow(gateway_pb2.GetFlowRequest(request_id="reused"), metadata=md())
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info, bad = _details(err.value)
    assert info.reason == "IDEMPOTENCY_KEY_REUSED" and bad is None


async def test_no_route_tells_callers_no_floats_and_operators_why(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.stub.GetFlow(gateway_pb2.GetFlowRequest(request_id="x"), metadata=md())
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.details() == "no channel can serve this request"
    assert _reason(err.value) == "NO_ROUTE"
    line = await rpc_line(caplog, "GetFlow")
    assert "available 1200 < 5000" in line.error  # type: ignore[attr-defined]


# --- the real status of calls that end early --------------------------------------------------


async def test_deadline_exceeded_is_logged_and_counted_with_the_flow(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ok, expired = count("Withhold", "OK"), count("Withhold", "DEADLINE_EXCEEDED")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await server.stub.Withhold(gateway_pb2.WithholdRequest(request_id="r-1"), metadata=md(), timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    line = await rpc_line(caplog, "Withhold")
    assert (line.code, line.flow_no, line.request_id) == ("DEADLINE_EXCEEDED", FLOW_NO, "r-1")  # type: ignore[attr-defined]
    assert count("Withhold", "DEADLINE_EXCEEDED") == expired + 1
    assert count("Withhold", "OK") == ok


async def test_cancelled_is_logged_and_counted_with_the_flow(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    ok, cancelled = count("Withhold", "OK"), count("Withhold", "CANCELLED")
    call = server.stub.Withhold(gateway_pb2.WithholdRequest(request_id="r-2"), metadata=md())
    await asyncio.wait_for(server.fake.withhold_started.wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    line = await rpc_line(caplog, "Withhold")
    assert (line.code, line.flow_no) == ("CANCELLED", FLOW_NO)  # type: ignore[attr-defined]
    assert count("Withhold", "CANCELLED") == cancelled + 1
    assert count("Withhold", "OK") == ok
