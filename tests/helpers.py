"""Small helpers the integration tests share."""

from __future__ import annotations

import secrets
import socket
from typing import TYPE_CHECKING, Any, cast

import asyncpg
import grpc
from google.rpc import error_details_pb2, status_pb2

from modelreg.domain.identity import HASH_KEY_NAME, KeyHasher, key_text, new_key_text
from modelreg.store.migrate import migrate
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as pb

if TYPE_CHECKING:  # the async stub types exist only in the generated .pyi files
    from modelreg.v1.registry_service_pb2_grpc import RegistryServiceAsyncStub as Stub

DETAILS_KEY = "grpc-status-details-bin"

# The test session's admin key: every test database is seeded with it (seed_admin), so
# every server the tests start on one authenticates the shared channels and the SDK
# (tests/conftest.py puts it in MODELREG_TOKEN).
ADMIN_KEY_ID, _ADMIN_SECRET = new_key_text()
ADMIN_TOKEN = key_text(ADMIN_KEY_ID, _ADMIN_SECRET).reveal()


async def seed_admin(url: str) -> None:
    """Migrate the database at `url` and give it principal `admin` with the session's
    key and the global admin role, as a server's first start would (with its own key) on
    a fresh one."""
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            HASH_KEY_NAME,
            secrets.token_bytes(32),
        )
        hasher = KeyHasher(
            await conn.fetchval("SELECT value FROM server_secrets WHERE name = $1", HASH_KEY_NAME)
        )
        await conn.execute(
            "INSERT INTO principals (name, kind, created_by) VALUES ('admin', 'person', 'tests')"
            " ON CONFLICT DO NOTHING"
        )
        await conn.execute(
            "INSERT INTO api_keys (key_id, principal, secret_hash, created_by)"
            " VALUES ($1, 'admin', $2, 'tests') ON CONFLICT DO NOTHING",
            ADMIN_KEY_ID,
            hasher.hash(_ADMIN_SECRET),
        )
        await conn.execute(
            "INSERT INTO role_bindings (role, subject_kind, subject, scope, created_by)"
            " VALUES ('admin', 'principal', 'admin', '', 'tests') ON CONFLICT DO NOTHING"
        )
    finally:
        await conn.close()


class _Bearer:
    """Adds `authorization: Bearer <token>` to a call (after the call's own metadata, so
    a call that sends its own key is judged by that one)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._header)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials,
            details.wait_for_ready,
        )  # fmt: skip


# grpc.aio files a channel's interceptor under the first of the four kinds it is, so each
# kind needs an object of its own.
class _UnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def bearer(token: str) -> list[Any]:
    """Client interceptors that add `token` to every call of a channel, of every kind."""
    return [kind(token) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]


async def bearer_of(
    channel: grpc.aio.Channel, principal: str, *, role: str = "editor"
) -> tuple[tuple[str, str], ...]:
    """Call metadata proving `principal`, with a new key made for it over `channel` (the
    admin's) and `role` granted to it globally: what a call's own `authorization` header
    sends ahead of the channel's."""
    from modelreg.v1 import access_service_pb2 as ac
    from modelreg.v1 import access_service_pb2_grpc as ac_grpc
    from modelreg.v1 import identity_service_pb2 as ids
    from modelreg.v1 import identity_service_pb2_grpc as ids_grpc

    reply = await ids_grpc.IdentityServiceStub(channel).CreateApiKey(
        ids.CreateApiKeyRequest(principal=principal)
    )
    binding = ac.RoleBinding(
        role=ac.Role.Value(f"ROLE_{role.upper()}"),
        subject_kind=ac.SUBJECT_KIND_PRINCIPAL,
        subject=principal,
    )
    await ac_grpc.AccessServiceStub(channel).CreateRoleBinding(
        ac.CreateRoleBindingRequest(binding=binding)
    )
    return (("authorization", f"Bearer {reply.key}"),)


def authed_channel(target: str, *, token: str = ADMIN_TOKEN, **kwargs: Any) -> grpc.aio.Channel:
    """A grpc.aio channel to `target` whose every call carries `token`."""
    return grpc.aio.insecure_channel(target, interceptors=bearer(token), **kwargs)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rich_status(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status a server attached to a failed call."""
    # grpc-stubs types every RpcError's trailers as the sync API's _Metadatum tuple; an
    # AioRpcError's are a grpc.aio.Metadata, (key, value) pairs
    trailers = cast(grpc.aio.Metadata, err.trailing_metadata())
    for key, value in trailers or ():
        if key == DETAILS_KEY:
            assert isinstance(value, bytes), f"{key} holds {value!r}"
            status = status_pb2.Status()
            status.ParseFromString(value)
            return status
    raise AssertionError(f"no rich status on {err.code()}: {err.details()}")


def reason_of(status: status_pb2.Status) -> str:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    raise AssertionError("no ErrorInfo in status")


def violations_of(status: status_pb2.Status) -> list[str]:
    """Field names of the BadRequest violations in a status."""
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return [v.field for v in bad.field_violations]
    return []


async def make_model(stub: Stub, model: str = "m", ns: str = "default") -> pb.Model:
    reply = await stub.CreateModel(rs.CreateModelRequest(parent=f"namespaces/{ns}", model_id=model))
    return reply.model


async def make_version(
    stub: Stub, model: str = "m", ns: str = "default", ready: bool = True
) -> pb.ModelVersion:
    state = pb.MODEL_VERSION_STATE_READY if ready else pb.MODEL_VERSION_STATE_PENDING
    reply = await stub.CreateModelVersion(
        rs.CreateModelVersionRequest(
            parent=f"namespaces/{ns}/models/{model}", version=pb.ModelVersion(state=state)
        )
    )
    return reply.version
