"""JWT bearer tokens end to end: keys made here, the JWKS served on loopback by a real
aiohttp server (or written to a file), a real modelreg server admitting calls through a
Gate double that authenticates with JwtCredentials, called through the generated stubs.

Time for the JWKS refresh rate limit is a FakeClock the test moves; token times (exp, nbf,
iat) are the wall clock's, as PyJWT reads them, set far enough off to need no timing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from modelreg.app import start_server, transport_credentials
from modelreg.config import Settings
from modelreg.domain.principals import Principal, Proof
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc
from modelreg.v1 import resources_pb2 as pb
from tests.helpers import reason_of, rich_status
from tests.integration.gates import CredentialsGate
from tests.integration.jwks_server import JwksServer
from tests.unit.fakes import FakeClock

if TYPE_CHECKING:
    from modelreg.v1.registry_service_pb2_grpc import RegistryServiceAsyncStub

ISSUER = "https://idp.example.test"
AUDIENCE = "modelreg"
MIN_REFRESH = 10.0


@dataclass(frozen=True)
class Signer:
    """A signing key of the test's IdP."""

    kid: str
    private: Any
    alg: str

    def jwk(self) -> dict[str, Any]:
        algorithm = get_default_algorithms()[self.alg]
        public = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return public | {"kid": self.kid, "use": "sig", "alg": self.alg}

    def token(self, **claims: Any) -> str:
        """A token of `alice` for this registry, valid for ten minutes; `claims` change
        or (given None) drop claims."""
        headers = {"kid": self.kid}
        return jwt.encode(_claims(**claims), self.private, algorithm=self.alg, headers=headers)


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 600,
        "groups": ["ml-team", "admins"],
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _rsa(kid: str) -> Signer:
    return Signer(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


FIRST = _rsa("k1")
IMPOSTOR = _rsa("k1")  # the same key id, another key: its signatures do not verify
ROTATED = Signer("k2", ec.generate_private_key(ec.SECP256R1()), "ES256")
EDWARDS = Signer("ed1", ed25519.Ed25519PrivateKey.generate(), "EdDSA")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(alg: str, key: bytes) -> str:
    """A token PyJWT would refuse to make: `alg` in the header, signed with HMAC-SHA256
    keyed by `key` (the public key's PEM, the classic confusion attack), or unsigned."""
    header = _b64(json.dumps({"alg": alg, "kid": FIRST.kid, "typ": "JWT"}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = _b64(hmac.new(key, signing_input, hashlib.sha256).digest()) if key else ""
    return f"{header}.{payload}.{signature}"


def _public_pem(signer: Signer) -> bytes:
    return cast(
        bytes,
        signer.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


@dataclass
class OidcServer:
    """modelreg admitting JWT bearers, with what the test looks at."""

    stub: RegistryServiceAsyncStub
    gate: CredentialsGate
    clock: FakeClock
    jwks: JwksServer | None = None


async def _serve(
    settings: Settings, stack: AsyncExitStack, clock: FakeClock, jwks: JwksServer | None
) -> OidcServer:
    gate = CredentialsGate(await transport_credentials(settings, stack, clock=clock))
    running = await start_server(settings, stack, gate=gate)
    channel = await stack.enter_async_context(
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    )
    stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
    return OidcServer(stub, gate, clock, jwks)


def _settings(database_url: str, home: Path, **oidc: Any) -> Settings:
    return Settings(
        address="127.0.0.1:0",
        postgres_url=database_url,
        home=home,
        grace_seconds=1,
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_min_refresh_seconds=MIN_REFRESH,
        **oidc,
    ).validated()


@pytest.fixture(scope="module")
async def oidc(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[OidcServer]:
    jwks = JwksServer()
    await jwks.start()
    jwks.keys = [FIRST.jwk(), EDWARDS.jwk()]
    settings = _settings(database_url, tmp_path_factory.mktemp("home"), oidc_jwks_url=jwks.url)
    try:
        async with AsyncExitStack() as stack:
            yield await _serve(settings, stack, FakeClock(), jwks)
    finally:
        await jwks.stop()


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _list(server: OidcServer, token: str) -> None:
    request = rs.ListModelsRequest(parent="namespaces/default")
    await server.stub.ListModels(request, metadata=_bearer(token))


async def _refusal(server: OidcServer, token: str) -> tuple[grpc.StatusCode, str]:
    """The status code and reason of a call with `token`, which must fail; its message
    must not repeat the token."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _list(server, token)
    err = caught.value
    assert token not in (err.details() or "")
    return err.code(), reason_of(rich_status(err))


async def test_a_good_token_is_its_prefixed_subject_and_groups(oidc: OidcServer) -> None:
    await _list(oidc, FIRST.token())
    assert oidc.gate.admitted[-1] == Principal(
        "oidc:alice", Proof.JWT, frozenset({"oidc:ml-team", "oidc:admins"})
    )
    await _list(oidc, EDWARDS.token(sub="admin", groups="ops"))  # EdDSA; one group as a string
    assert oidc.gate.admitted[-1] == Principal("oidc:admin", Proof.JWT, frozenset({"oidc:ops"}))


async def test_the_token_subject_is_the_actor_events_record(oidc: OidcServer) -> None:
    model = f"m{uuid.uuid4().hex[:8]}"
    who = _bearer(FIRST.token(sub="bob@example.test"))
    stub = oidc.stub
    await stub.CreateModel(
        rs.CreateModelRequest(parent="namespaces/default", model_id=model), metadata=who
    )
    await stub.CreateModelVersion(
        rs.CreateModelVersionRequest(
            parent=f"namespaces/default/models/{model}",
            version=pb.ModelVersion(state=pb.MODEL_VERSION_STATE_READY),
        ),
        metadata=who,
    )
    alias = f"namespaces/default/models/{model}/aliases/production"
    await stub.SetAlias(rs.SetAliasRequest(name=alias, version_number=1), metadata=who)
    history = await stub.ListAliasHistory(rs.ListAliasHistoryRequest(name=alias), metadata=who)
    assert [e.actor for e in history.events] == ["oidc:bob@example.test"]


def _expired() -> str:
    return FIRST.token(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)


REFUSED: dict[str, tuple[Callable[[], str], str]] = {
    "expired": (_expired, "TOKEN_EXPIRED"),
    "not yet valid": (lambda: FIRST.token(nbf=int(time.time()) + 3600), "TOKEN_NOT_YET_VALID"),
    "issued in the future": (
        lambda: FIRST.token(iat=int(time.time()) + 3600),
        "TOKEN_NOT_YET_VALID",
    ),
    "wrong issuer": (lambda: FIRST.token(iss="https://evil.example.test"), "WRONG_ISSUER"),
    "wrong audience": (lambda: FIRST.token(aud="another-service"), "WRONG_AUDIENCE"),
    "bad signature": (IMPOSTOR.token, "BAD_SIGNATURE"),
    "alg none": (lambda: _forged("none", b""), "ALGORITHM_NOT_ALLOWED"),
    "HS256 keyed with the public key": (
        lambda: _forged("HS256", _public_pem(FIRST)),
        "ALGORITHM_NOT_ALLOWED",
    ),
    "ES256 claimed for an RSA key": (
        lambda: jwt.encode(_claims(), ROTATED.private, algorithm="ES256", headers={"kid": "k1"}),
        "ALGORITHM_NOT_ALLOWED",
    ),
    "algorithm not the key's": (
        lambda: jwt.encode(_claims(), FIRST.private, algorithm="PS256", headers={"kid": "k1"}),
        "ALGORITHM_NOT_ALLOWED",  # k1's JWK pins RS256
    ),
    "unknown kid": (lambda: _rsa("nobody-knows").token(), "UNKNOWN_KEY"),
    "no exp": (lambda: FIRST.token(exp=None), "MALFORMED_TOKEN"),
    "no audience": (lambda: FIRST.token(aud=None), "MALFORMED_TOKEN"),
    "no subject": (lambda: FIRST.token(sub=None), "MALFORMED_TOKEN"),
    "not a JWT": (lambda: "definitely-not-a-jwt", "MALFORMED_TOKEN"),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_a_bad_token_is_unauthenticated_with_its_reason(oidc: OidcServer, case: str) -> None:
    make, reason = REFUSED[case]
    await oidc.clock.advance(MIN_REFRESH)  # an unknown kid may refresh, as in service
    assert await _refusal(oidc, make()) == (grpc.StatusCode.UNAUTHENTICATED, reason)


async def test_an_api_key_bearer_is_left_to_the_api_key_credentials(oidc: OidcServer) -> None:
    code, reason = await _refusal(oidc, "mrk_abcdef_0123456789")
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "NO_CREDENTIALS")  # the gate's


async def test_a_rotated_key_is_picked_up_and_a_removed_one_stops_working(
    oidc: OidcServer,
) -> None:
    assert oidc.jwks is not None
    old = FIRST.token(sub="carol")
    await _list(oidc, old)  # verified, and cached
    oidc.jwks.keys = [ROTATED.jwk(), EDWARDS.jwk()]  # the IdP rotates: k1 out, k2 in
    try:
        await oidc.clock.advance(MIN_REFRESH)
        await _list(oidc, ROTATED.token(sub="carol"))  # an unknown kid: the set is fetched
        assert oidc.gate.admitted[-1].name == "oidc:carol"
        code, reason = await _refusal(oidc, old)  # cached, but its key is gone
        assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_KEY")
    finally:
        oidc.jwks.keys = [FIRST.jwk(), EDWARDS.jwk()]
        await oidc.clock.advance(MIN_REFRESH)
        await _list(oidc, FIRST.token())  # k1 back for the other tests


async def test_a_flood_of_unknown_kids_fetches_the_keys_a_bounded_number_of_times(
    oidc: OidcServer,
) -> None:
    assert oidc.jwks is not None
    before, windows, calls = oidc.jwks.requests, 0, 0
    for advance in (True, False, True, False):
        if advance:
            await oidc.clock.advance(MIN_REFRESH)
            windows += 1
        tokens = [_rsa(f"random-{uuid.uuid4().hex}").token() for _ in range(2)] * 40
        refusals = await asyncio.gather(*(_refusal(oidc, t) for t in tokens))
        calls += len(tokens)
        assert set(refusals) == {(grpc.StatusCode.UNAUTHENTICATED, "UNKNOWN_KEY")}
    fetched = oidc.jwks.requests - before
    assert calls == 320
    assert fetched <= windows  # at most one fetch per MIN_REFRESH, however many kids
    assert fetched == windows  # and each window did refresh (an unknown kid is looked for)
    await _list(oidc, FIRST.token())  # the good keys are still held


async def test_an_unreachable_jwks_keeps_the_keys_held(oidc: OidcServer) -> None:
    assert oidc.jwks is not None
    url, jwks = oidc.jwks.url, oidc.jwks
    await jwks.stop()  # the IdP is down
    try:
        await oidc.clock.advance(MIN_REFRESH)
        code, reason = await _refusal(oidc, _rsa("new-key").token())
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "JWKS_UNAVAILABLE")
        await _list(oidc, FIRST.token(sub="dave"))  # known keys go on working
    finally:
        await jwks.start(port=int(url.rsplit(":", 1)[1].split("/")[0]))


@pytest.fixture(scope="module")
async def file_oidc(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[OidcServer, Path]]:
    home = tmp_path_factory.mktemp("home")
    jwks_file = home / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [FIRST.jwk()]}))
    settings = _settings(database_url, home, oidc_jwks_file=str(jwks_file))
    async with AsyncExitStack() as stack:
        yield await _serve(settings, stack, FakeClock(), None), jwks_file


async def test_a_jwks_file_is_read_and_reread_when_a_key_is_new(
    file_oidc: tuple[OidcServer, Path],
) -> None:
    server, jwks_file = file_oidc
    await _list(server, FIRST.token(sub="erin"))
    assert server.gate.admitted[-1].name == "oidc:erin"
    jwks_file.write_text(json.dumps({"keys": [FIRST.jwk(), ROTATED.jwk()]}))  # a new ConfigMap
    await server.clock.advance(MIN_REFRESH)
    await _list(server, ROTATED.token(sub="frank"))
    assert server.gate.admitted[-1].name == "oidc:frank"
    assert await _refusal(server, IMPOSTOR.token()) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "BAD_SIGNATURE",
    )


async def test_a_large_key_set_is_read_whole(oidc: OidcServer) -> None:
    assert oidc.jwks is not None
    big = Signer("last-of-many", ec.generate_private_key(ec.SECP256R1()), "ES256")
    filler = [FIRST.jwk() | {"kid": f"filler-{i}"} for i in range(400)]  # ~200 KiB of keys
    oidc.jwks.keys = [FIRST.jwk(), EDWARDS.jwk(), *filler, big.jwk()]
    try:
        await oidc.clock.advance(MIN_REFRESH)
        await _list(oidc, big.token(sub="grace"))  # its key comes last, past many chunks
        assert oidc.gate.admitted[-1].name == "oidc:grace"
    finally:
        oidc.jwks.keys = [FIRST.jwk(), EDWARDS.jwk()]
