"""The role table covers every operator method; the interceptor enforces it and fails closed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.descriptor import FileDescriptor

from gateway.api import access
from gateway.api.auth import GatewayInterceptor
from gateway.config import Secret
from gateway.security.principals import Audience, CallerTable, OperatorTable, Principals, Role
from paygate.v1 import admin_pb2, admin_pb2_grpc, events_pb2, gateway_pb2, plans_pb2, recon_pb2, splits_pb2

PROTOS: list[FileDescriptor] = [
    gateway_pb2.DESCRIPTOR,
    admin_pb2.DESCRIPTOR,
    events_pb2.DESCRIPTOR,
    plans_pb2.DESCRIPTOR,
    splits_pb2.DESCRIPTOR,
    recon_pb2.DESCRIPTOR,
]


def operator_methods() -> set[str]:
    return {
        f"/{service.full_name}/{method.name}"
        for proto in PROTOS
        for service in proto.services_by_name.values()
        if access.SERVICE_AUDIENCE.get(service.full_name) is Audience.OPERATOR
        for method in service.methods
    }


def test_every_paygate_service_has_an_audience() -> None:
    services = {s.full_name for proto in PROTOS for s in proto.services_by_name.values()}
    assert services == set(access.SERVICE_AUDIENCE)


def test_every_operator_method_has_a_minimum_role_and_nothing_else_does() -> None:
    assert {m.name for m in admin_pb2.DESCRIPTOR.services_by_name["GatewayAdmin"].methods} <= {
        m.rsplit("/", 1)[-1] for m in access.MINIMUM_ROLE
    }
    assert set(access.MINIMUM_ROLE) == operator_methods()


def test_what_each_role_may_change() -> None:
    viewer = {m for m, role in access.MINIMUM_ROLE.items() if role is Role.VIEWER}
    assert all(m.rsplit("/", 1)[-1].startswith(("List", "Get")) for m in viewer), "viewers only read"
    assert access.minimum_role("/paygate.v1.GatewayAdmin/ApproveResolution") is Role.APPROVER
    assert access.minimum_role("/paygate.v1.GatewayAdmin/ResolveFlow") is Role.OPERATOR
    with pytest.raises(access.Unmapped):
        access.minimum_role("/paygate.v1.GatewayAdmin/DropEverything")
    with pytest.raises(access.Unmapped):
        access.audience_of("/paygate.v2.Shiny/Do")
    assert access.audience_of("/grpc.health.v1.Health/Check") is None


# --- over a real channel -------------------------------------------------------------------------

TOKENS = {
    Role.VIEWER: "viewer-token-0123456789",
    Role.OPERATOR: "operator-token-012345",
    Role.APPROVER: "approver-token-012345",
}
CALLER_TOKEN = "caller-token-0123456789"


class Admin(admin_pb2_grpc.GatewayAdminServicer):
    async def ListChannels(self, request: object, context: object) -> admin_pb2.ListChannelsResponse:
        return admin_pb2.ListChannelsResponse()

    async def SetChannelState(self, request: object, context: object) -> admin_pb2.ChannelInfo:
        return admin_pb2.ChannelInfo(channel="bank-a")

    async def RejectResolution(self, request: object, context: object) -> admin_pb2.PendingResolution:
        return admin_pb2.PendingResolution(id=1)


async def _ok(request: bytes, context: object) -> bytes:
    return b""


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    principals = Principals(
        {"loans": CallerTable(token=Secret(CALLER_TOKEN))},
        {role.value: OperatorTable(token=Secret(token), role=role) for role, token in TOKENS.items()},
    )
    server = grpc.aio.server(interceptors=[GatewayInterceptor(principals)])
    admin_pb2_grpc.add_GatewayAdminServicer_to_server(Admin(), server)
    # a paygate service nobody has given an audience, and a streaming method of a known one
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "paygate.v1.Unlisted", {"Do": grpc.unary_unary_rpc_method_handler(_ok)}
            ),
            grpc.method_handlers_generic_handler(
                "paygate.v1.PaymentGateway", {"Watch": grpc.unary_stream_rpc_method_handler(_ok)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(0)


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_each_role_reaches_what_its_rank_allows(channel: grpc.aio.Channel) -> None:
    admin = admin_pb2_grpc.GatewayAdminStub(channel)
    calls = {
        Role.VIEWER: lambda m: admin.ListChannels(admin_pb2.ListChannelsRequest(), metadata=m),
        Role.OPERATOR: lambda m: admin.SetChannelState(admin_pb2.SetChannelStateRequest(), metadata=m),
        Role.APPROVER: lambda m: admin.RejectResolution(admin_pb2.RejectResolutionRequest(), metadata=m),
    }
    for role, token in TOKENS.items():
        for needed, call in calls.items():
            if role.allows(needed):
                await call(md(token))
            else:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call(md(token))
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert f"needs the {needed} role" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await calls[Role.VIEWER](md(CALLER_TOKEN))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_paygate_service_of_no_table_and_a_streaming_method_are_refused(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await channel.unary_unary("/paygate.v1.Unlisted/Do")(b"", metadata=md(TOKENS[Role.APPROVER]))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "no audience" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in channel.unary_stream("/paygate.v1.PaymentGateway/Watch")(b"", metadata=md(CALLER_TOKEN)):
            pass
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
