"""TLS and mutual TLS on the listener, end to end: certificate authorities and
certificates made by the test, a real modelreg server on loopback, called through the
generated stubs over grpc's own ssl credentials (and through the SDK's `tls=`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelreg.app import start_server, transport_credentials
from modelreg.client import AsyncClient, Client, NotFoundError, Tls, UnavailableError
from modelreg.client.tls import TlsOption
from modelreg.config import Settings
from modelreg.domain.principals import Principal, Proof
from modelreg.v1 import admin_service_pb2 as admin
from modelreg.v1 import admin_service_pb2_grpc as admin_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc
from modelreg.v1 import resources_pb2 as pb
from tests.helpers import ADMIN_TOKEN
from tests.integration.gates import CredentialsGate
from tests.integration.serverproc import ServerProcess
from tests.pki import Authority, Issued

if TYPE_CHECKING:
    from modelreg.v1.registry_service_pb2_grpc import RegistryServiceAsyncStub

SPIFFE_ID = "spiffe://example.test/ns/ml/sa/trainer"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # a channel of its own per call


@dataclass(frozen=True)
class Pki:
    """The registry's CA (server and good clients), and another CA nobody trusts."""

    ca: Authority
    server: Issued
    spiffe: Issued  # a URI SAN (a SPIFFE id) and a CN
    cn_only: Issued  # no SAN: its CN names it
    stranger: Issued  # the same names, from the other CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = Authority(directory, "registry"), Authority(directory, "other")
    return Pki(
        ca=ca,
        server=ca.server("server", "localhost", "registry.test"),
        spiffe=ca.client("trainer", "trainer", uri=SPIFFE_ID),
        cn_only=ca.client("ci", "ci-runner"),
        stranger=other.client("stranger", "trainer", uri=SPIFFE_ID),
    )


def _credentials(pki: Pki, client: Issued | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert_file.read_bytes(),
        private_key=client.key_file.read_bytes() if client else None,
        certificate_chain=client.cert_file.read_bytes() if client else None,
    )


@dataclass
class TlsServer:
    target: str
    gate: CredentialsGate | None


async def _serve(
    database_url: str, home: Path, pki: Pki, *, mutual: bool
) -> AsyncIterator[TlsServer]:
    settings = Settings(
        address="127.0.0.1:0",
        postgres_url=database_url,
        home=home,
        grace_seconds=1,
        tls_cert_file=str(pki.server.cert_file),
        tls_key_file=str(pki.server.key_file),
        tls_client_ca_file=str(pki.ca.cert_file) if mutual else None,
    ).validated()
    async with AsyncExitStack() as stack:
        gate = CredentialsGate(await transport_credentials(settings, stack)) if mutual else None
        running = await start_server(settings, stack, gate=gate)
        yield TlsServer(f"127.0.0.1:{running.port}", gate)


@pytest.fixture(scope="module")
async def mtls(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> AsyncIterator[TlsServer]:
    async for server in _serve(database_url, tmp_path_factory.mktemp("home"), pki, mutual=True):
        yield server


@pytest.fixture(scope="module")
async def tls(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> AsyncIterator[TlsServer]:
    async for server in _serve(database_url, tmp_path_factory.mktemp("home"), pki, mutual=False):
        yield server


async def _stub(
    stack: AsyncExitStack, target: str, credentials: grpc.ChannelCredentials
) -> RegistryServiceAsyncStub:
    channel = grpc.aio.secure_channel(target, credentials, options=OWN_CONNECTION)
    stack.push_async_callback(channel.close, None)
    return registry_service_pb2_grpc.RegistryServiceStub(channel)


async def _moved_by(stub: RegistryServiceAsyncStub) -> list[str]:
    """Move an alias of a new model; the actors its history records."""
    model = f"m{uuid.uuid4().hex[:8]}"
    await stub.CreateModel(rs.CreateModelRequest(parent="namespaces/default", model_id=model))
    ready = pb.ModelVersion(state=pb.MODEL_VERSION_STATE_READY)
    parent = f"namespaces/default/models/{model}"
    await stub.CreateModelVersion(rs.CreateModelVersionRequest(parent=parent, version=ready))
    alias = f"{parent}/aliases/production"
    await stub.SetAlias(rs.SetAliasRequest(name=alias, version_number=1))
    history = await stub.ListAliasHistory(rs.ListAliasHistoryRequest(name=alias))
    return [event.actor for event in history.events]


async def _list(stub: RegistryServiceAsyncStub) -> None:
    await stub.ListModels(rs.ListModelsRequest(parent="namespaces/default"), timeout=10)


async def test_a_client_certificate_names_the_caller_by_its_san(mtls: TlsServer, pki: Pki) -> None:
    async with AsyncExitStack() as stack:
        stub = await _stub(stack, mtls.target, _credentials(pki, pki.spiffe))
        assert await _moved_by(stub) == [f"x509:{SPIFFE_ID}"]
    assert mtls.gate is not None
    assert mtls.gate.admitted[-1] == Principal(f"x509:{SPIFFE_ID}", Proof.CERTIFICATE)


async def test_a_certificate_without_san_is_named_by_its_common_name(
    mtls: TlsServer, pki: Pki
) -> None:
    async with AsyncExitStack() as stack:
        stub = await _stub(stack, mtls.target, _credentials(pki, pki.cn_only))
        assert await _moved_by(stub) == ["x509:ci-runner"]


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
async def test_the_handshake_refuses_a_client_the_ca_did_not_certify(
    mtls: TlsServer, pki: Pki, who: str
) -> None:
    client = None if who == "no certificate" else pki.stranger
    async with AsyncExitStack() as stack:
        refused = await _stub(stack, mtls.target, _credentials(pki, client))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _list(refused)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        good = await _stub(stack, mtls.target, _credentials(pki, pki.spiffe))
        await _list(good)  # the server is still up, and serves the good client


async def test_the_sdk_speaks_tls_with_a_private_ca(tls: TlsServer, pki: Pki) -> None:
    model = f"m{uuid.uuid4().hex[:8]}"
    async with AsyncClient(tls.target, tls=Tls(ca_file=pki.ca.cert_file)) as client:
        created = await client.create_model(f"default/{model}")
    assert created.name == f"namespaces/default/models/{model}"
    other_name = Tls(ca_file=pki.ca.cert_file, server_name="registry.test")  # a SAN it has

    def blocking() -> str:  # in a thread: this loop runs the server
        with Client(tls.target, tls=other_name) as client:
            return client.get_model(f"default/{model}").name

    assert await asyncio.to_thread(blocking) == created.name


async def test_a_client_that_does_not_trust_the_server_fails_cleanly(
    tls: TlsServer, pki: Pki
) -> None:
    refusing: list[TlsOption] = [
        False,  # plaintext to a TLS port
        True,  # the system's roots do not know the test's CA
        Tls(ca_file=pki.ca.cert_file, server_name="not-the-server.test"),
    ]
    for how in refusing:
        async with AsyncClient(tls.target, tls=how, retries=0, timeout=10) as client:
            with pytest.raises(UnavailableError):
                await client.get_model("default/anything")
    async with AsyncClient(tls.target, tls=Tls(ca_file=pki.ca.cert_file)) as client:
        with pytest.raises(NotFoundError):  # an answer: the server still serves
            await client.get_model("default/anything")


async def test_the_sdk_reads_the_client_tls_variables(
    mtls: TlsServer, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELREG_TLS_CA_FILE", str(pki.ca.cert_file))
    monkeypatch.setenv("MODELREG_TLS_CLIENT_CERT_FILE", str(pki.cn_only.cert_file))
    monkeypatch.setenv("MODELREG_TLS_CLIENT_KEY_FILE", str(pki.cn_only.key_file))
    async with AsyncClient(mtls.target) as client:
        await client.create_model(f"default/m{uuid.uuid4().hex[:8]}")
    assert mtls.gate is not None
    assert mtls.gate.admitted[-1].name == "x509:ci-runner"


@pytest.mark.slow
async def test_workers_share_a_tls_port(database_url: str, tmp_path: Path, pki: Pki) -> None:
    """`--workers 2`: each worker binds the TLS port with SO_REUSEPORT; both serve TLS."""
    server = ServerProcess(
        tmp_path / "serve.log",
        MODELREG_POSTGRES_URL=database_url,
        MODELREG_WORKERS="2",
        MODELREG_TLS_CERT_FILE=str(pki.server.cert_file),
        MODELREG_TLS_KEY_FILE=str(pki.server.key_file),
    )
    credentials = _credentials(pki, None)
    try:
        await asyncio.to_thread(server.wait_serving, 120, credentials)
        await asyncio.to_thread(server.wait_workers, 2, 120)
        pids: set[int] = set()
        async with asyncio.timeout(60):
            while len(pids) < 2:  # new connections land on either worker
                async with grpc.aio.secure_channel(
                    server.target, credentials, options=OWN_CONNECTION
                ) as channel:
                    stats = admin_grpc.AdminServiceStub(channel)
                    reply = await stats.GetServerStats(
                        admin.GetServerStatsRequest(),
                        timeout=10,
                        metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),),
                    )
                    pids.add(reply.pid)
        async with grpc.aio.insecure_channel(server.target) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health_pb2_grpc.HealthStub(plain).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        assert server.stop() == 0
