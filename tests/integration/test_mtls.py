"""Mutual TLS on the gRPC listener, with real handshakes and certificates made here (devstack/certs.py).

A caller is the principal its verified certificate's SAN names, as gRPC's auth context reports it;
certificates of another CA, expired ones and clients without one never finish the handshake; a SAN
no principal has is refused with UNAUTHENTICATED; certificates rotated on disk are served to new
connections while open ones keep working.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import grpc
import pytest

from channels.simkit import Behaviour
from devstack.cards import luhn_card
from devstack.certs import DevCA, Issued
from gateway.metrics import REGISTRY
from gateway.store.db import DatabaseConfig
from paygate.v1 import admin_pb2, admin_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from tests.support.harness import CALLER_TOKENS, Harness, running_gateway

LOANS_SAN = "spiffe://lender.example/loan-servicing"
COLLECTIONS_SAN = "collections.lender.example"
OPS_SAN = "spiffe://lender.example/operators/alice"


@dataclass
class Pki:
    folder: Path
    ca: DevCA
    server: Issued
    loans: Issued
    collections: Issued
    ops: Issued

    def credentials(self, client: Issued | None, *, root: DevCA | None = None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=(root or self.ca).cert_pem,
            private_key=client.key_pem if client else None,
            certificate_chain=client.cert_pem if client else None,
        )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = DevCA.create("test lender CA")
    folder = tmp_path / "tls"
    ca.write(folder)
    server = ca.issue("paygate", dns=["localhost"], ips=["127.0.0.1"], server=True)
    server.write(folder, "server")
    return Pki(
        folder,
        ca,
        server,
        loans=ca.issue("loan-servicing", uris=[LOANS_SAN]),
        collections=ca.issue("collections", dns=[COLLECTIONS_SAN]),
        ops=ca.issue("alice", uris=[OPS_SAN]),
    )


@pytest.fixture
async def h(db_config: DatabaseConfig, pki: Pki) -> AsyncIterator[Harness]:
    tls = {
        "cert_file": str(pki.folder / "server.pem"),
        "key_file": str(pki.folder / "server.key"),
        "client_ca_file": str(pki.folder / "ca.pem"),
        "reload_check_s": 0.1,
    }
    async with running_gateway(
        db_config,
        {"bank-a": Behaviour()},
        credentials=pki.credentials(pki.loans),
        server={"tls": tls},
        # loans: certificate and token (a second factor); collections: its certificate only
        callers={
            "loans": {"token": CALLER_TOKENS["loans"], "san": LOANS_SAN},
            "collections": {"san": COLLECTIONS_SAN, "auth": "cert"},
        },
        operators={"alice": {"san": OPS_SAN, "role": "viewer"}},
    ) as harness:
        yield harness


def withhold(request_id: str, card: str) -> gateway_pb2.WithholdRequest:
    return gateway_pb2.WithholdRequest(
        request_id=request_id, amount=gateway_pb2.Money(amount=10000, currency="CNY"), account_no=card, bank_code="ICBC"
    )


async def _call(h: Harness, credentials: grpc.ChannelCredentials, metadata: tuple = ()) -> gateway_pb2.Agreement:
    async with grpc.aio.secure_channel(f"127.0.0.1:{h.gateway.grpc_port}", credentials) as channel:
        stub = gateway_pb2_grpc.PaymentGatewayStub(channel)
        response: gateway_pb2.ListAgreementsResponse = await stub.ListAgreements(
            gateway_pb2.ListAgreementsRequest(), metadata=metadata, timeout=10
        )
        return response


async def _refused(h: Harness, credentials: grpc.ChannelCredentials, metadata: tuple = ()) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _call(h, credentials, metadata)
    return err.value


async def test_the_flow_belongs_to_the_caller_its_certificate_names(h: Harness, pki: Pki) -> None:
    card = luhn_card()
    await h.bind_card(card, ["bank-a"], caller="loans")
    flow = await h.stub.Withhold(withhold("mtls-1", card), metadata=h.md("loans"))
    assert flow.status == gateway_pb2.SUCCEEDED
    row = await h.gateway.db.fetchone("SELECT caller FROM flows WHERE flow_no=%s", (flow.flow_no,))
    assert row == {"caller": "loans"}

    # collections' certificate cannot read it, by flow number or by request id
    async with grpc.aio.secure_channel(f"127.0.0.1:{h.gateway.grpc_port}", pki.credentials(pki.collections)) as channel:
        other = gateway_pb2_grpc.PaymentGatewayStub(channel)
        assert (await other.ListAgreements(gateway_pb2.ListAgreementsRequest())).agreements == []
        for request in (
            gateway_pb2.GetFlowRequest(flow_no=flow.flow_no),
            gateway_pb2.GetFlowRequest(request_id="mtls-1"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await other.GetFlow(request)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # nor with loans' token: the token and the certificate must name the same caller
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await other.GetFlow(gateway_pb2.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md("loans"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "different principals" in (err.value.details() or "")
    assert (await h.stub.GetFlow(gateway_pb2.GetFlowRequest(flow_no=flow.flow_no), metadata=h.md())).flow_no == (
        flow.flow_no
    )


async def test_a_second_factor_is_required_when_configured(h: Harness, pki: Pki) -> None:
    err = await _refused(h, pki.credentials(pki.loans))  # loans' certificate without its token
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "must present its token" in (err.details() or "")
    assert await _call(h, pki.credentials(pki.loans), h.md("loans")) is not None


@pytest.mark.parametrize("case", ["no certificate", "another CA", "expired"])
async def test_certificates_the_handshake_refuses(h: Harness, pki: Pki, case: str) -> None:
    if case == "no certificate":
        client = None
    elif case == "another CA":
        client = DevCA.create("someone else's CA").issue("loan-servicing", uris=[LOANS_SAN])
    else:
        started = datetime.now(UTC) - timedelta(days=10)
        client = pki.ca.issue("loan-servicing", uris=[LOANS_SAN], valid_from=started, days=1)
    err = await _refused(h, pki.credentials(client), h.md("loans"))
    # the handshake fails, so the call never reaches the interceptor, let alone a servicer
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err


async def test_a_certificate_naming_no_caller_is_unauthenticated(h: Harness, pki: Pki) -> None:
    stranger = pki.ca.issue("stranger", uris=["spiffe://lender.example/stranger"], dns=["stranger.lender.example"])
    err = await _refused(h, pki.credentials(stranger), h.md("loans"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "spiffe://lender.example/stranger" in (err.details() or "")
    assert "names no configured caller or operator" in (err.details() or "")


async def test_operators_by_certificate_and_audience(h: Harness, pki: Pki) -> None:
    async with grpc.aio.secure_channel(f"127.0.0.1:{h.gateway.grpc_port}", pki.credentials(pki.ops)) as channel:
        admin = admin_pb2_grpc.GatewayAdminStub(channel)
        assert (await admin.ListChannels(admin_pb2.ListChannelsRequest())).channels
        with pytest.raises(grpc.aio.AioRpcError) as err:  # a viewer
            await admin.SetChannelState(
                admin_pb2.SetChannelStateRequest(channel="bank-a", state=admin_pb2.DISABLED, reason="x")
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # an operator's certificate is no caller's
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await gateway_pb2_grpc.PaymentGatewayStub(channel).ListAgreements(gateway_pb2.ListAgreementsRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # ... and a caller's is no operator's
    assert h.admin is not None
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await h.admin.ListChannels(admin_pb2.ListChannelsRequest(), metadata=h.md("loans"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _expiry(listener: str, cert: str) -> float:
    value = REGISTRY.get_sample_value(
        "paygate_tls_certificate_expires_in_seconds", {"listener": listener, "cert": cert}
    )
    assert value is not None
    return value


async def test_rotated_certificates_reach_new_connections_and_spare_open_ones(h: Harness, pki: Pki) -> None:
    assert 6 * 86400 < _expiry("grpc", "server") <= 7 * 86400
    assert _expiry("grpc", "client_ca") > 29 * 86400
    old = pki.credentials(pki.loans)
    async with grpc.aio.secure_channel(f"127.0.0.1:{h.gateway.grpc_port}", old) as kept:
        stub = gateway_pb2_grpc.PaymentGatewayStub(kept)
        await stub.ListAgreements(gateway_pb2.ListAgreementsRequest(), metadata=h.md("loans"))

        # the new server certificate comes from another server CA, so a client can tell which it got
        server_ca = DevCA.create("rotated server CA")
        server_ca.issue("paygate", dns=["localhost"], ips=["127.0.0.1"], server=True, days=3).write(
            pki.folder, "server"
        )
        new = pki.credentials(pki.loans, root=server_ca)
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            try:
                await _call(h, new, h.md("loans"))
                break
            except grpc.aio.AioRpcError:
                assert asyncio.get_running_loop().time() < deadline, "the rotated certificate was never served"
                await asyncio.sleep(0.2)
        # new connections get the new certificate only
        assert (await _refused(h, old, h.md("loans"))).code() == grpc.StatusCode.UNAVAILABLE
        # the open channel was not cut: it could not reconnect, trusting only the old server CA
        await stub.ListAgreements(gateway_pb2.ListAgreementsRequest(), metadata=h.md("loans"))
    assert 2 * 86400 < _expiry("grpc", "server") <= 3 * 86400


async def test_a_broken_rotation_keeps_the_old_certificate(h: Harness, pki: Pki) -> None:
    def reloads(result: str) -> float:
        return REGISTRY.get_sample_value("paygate_tls_reloads_total", {"listener": "grpc", "result": result}) or 0.0

    rejected = reloads("rejected")
    # a certificate whose key is not the key on disk (a half-done rotation)
    stray = pki.ca.issue("paygate", dns=["localhost"], ips=["127.0.0.1"], server=True)
    (pki.folder / "server.pem").write_bytes(stray.cert_pem)
    deadline = asyncio.get_running_loop().time() + 10
    while reloads("rejected") == rejected:
        assert asyncio.get_running_loop().time() < deadline, "the broken rotation was not looked at"
        await asyncio.sleep(0.1)
    assert await _call(h, pki.credentials(pki.loans), h.md("loans")) is not None


async def test_the_callback_endpoint_over_tls(db_config: DatabaseConfig, pki: Pki) -> None:
    http_tls = {"cert_file": str(pki.folder / "server.pem"), "key_file": str(pki.folder / "server.key")}
    async with running_gateway(db_config, {"bank-a": Behaviour()}, server={"http_tls": http_tls}) as h:
        assert h.gateway.flows.settings.callback_base == f"https://127.0.0.1:{h.gateway.http_port}"
        context = ssl.create_default_context(cadata=pki.ca.cert_pem.decode())
        url = f"https://127.0.0.1:{h.gateway.http_port}/callbacks/bank-a"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=b"{}", ssl=context) as reply:
                assert reply.status < 500  # the channel's own refusal of an unsigned notice
            with pytest.raises(aiohttp.ClientError):  # plaintext is not spoken there
                async with session.post(url.replace("https", "http"), data=b"{}", ssl=context):
                    pass
        assert _expiry("http", "server") > 6 * 86400
