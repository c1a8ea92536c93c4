"""The callers of the access matrix, with real credentials made through the server's own
RPCs: no credentials, an expired key, a revoked key, a viewer, an editor and an approver
of namespace `team`, a global admin, and an editor of namespace `other`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg
import grpc

from modelreg.v1 import access_service_pb2 as ac
from modelreg.v1 import (
    access_service_pb2_grpc,
    admin_service_pb2_grpc,
    approval_service_pb2_grpc,
    artifact_service_pb2_grpc,
    identity_service_pb2_grpc,
    lineage_service_pb2_grpc,
    registry_service_pb2_grpc,
    webhook_service_pb2_grpc,
)
from modelreg.v1 import identity_service_pb2 as ids
from modelreg.v1 import registry_service_pb2 as rs
from tests.helpers import authed_channel
from tests.integration.scenarios import Role, Stubs

TEAM, OTHER = "team", "other"


@dataclass(frozen=True)
class Caller:
    """One column of the matrix: its channel, and what it holds."""

    name: str
    channel: grpc.aio.Channel
    authenticated: bool = True
    team_role: Role | None = None  # its role in `team`
    other_role: Role | None = None  # its role in `other`
    global_admin: bool = False


def stubs_on(channel: grpc.aio.Channel, requester: str = "") -> Stubs:
    """Stubs on `channel`; change requests are made with the `requester` key if given."""
    return Stubs(
        registry=registry_service_pb2_grpc.RegistryServiceStub(channel),
        artifacts=artifact_service_pb2_grpc.ArtifactServiceStub(channel),
        admin=admin_service_pb2_grpc.AdminServiceStub(channel),
        webhooks=webhook_service_pb2_grpc.WebhookServiceStub(channel),
        approvals=approval_service_pb2_grpc.ApprovalServiceStub(channel),
        identity=identity_service_pb2_grpc.IdentityServiceStub(channel),
        access=access_service_pb2_grpc.AccessServiceStub(channel),
        lineage=lineage_service_pb2_grpc.LineageServiceStub(channel),
        requester=(("authorization", f"Bearer {requester}"),) if requester else (),
    )


_ROLES = {
    Role.VIEWER: ac.ROLE_VIEWER,
    Role.EDITOR: ac.ROLE_EDITOR,
    Role.APPROVER: ac.ROLE_APPROVER,
    Role.ADMIN: ac.ROLE_ADMIN,
}


async def _key(admin: Stubs, principal: str) -> tuple[str, str]:
    made = await admin.identity.CreateApiKey(
        ids.CreateApiKeyRequest(principal=principal, kind=ids.PRINCIPAL_KIND_SERVICE)
    )
    return made.key, made.api_key.key_id


async def _grant(admin: Stubs, principal: str, role: Role, namespace: str = "") -> None:
    binding = ac.RoleBinding(
        role=_ROLES[role],
        subject_kind=ac.SUBJECT_KIND_PRINCIPAL,
        subject=principal,
        namespace=namespace,
    )
    await admin.access.CreateRoleBinding(ac.CreateRoleBindingRequest(binding=binding))


@asynccontextmanager
async def matrix_callers(
    target: str, admin: Stubs, db: asyncpg.Connection
) -> AsyncIterator[tuple[list[Caller], str]]:
    """The callers, and the requester's key (an editor of `team` who is none of them)."""
    for ns in (TEAM, OTHER):
        await admin.registry.CreateNamespace(rs.CreateNamespaceRequest(namespace_id=ns))
    async with AsyncExitStack() as stack:

        async def channel(token: str) -> grpc.aio.Channel:
            return await stack.enter_async_context(authed_channel(target, token=token))

        callers = [
            Caller(
                "none",
                await stack.enter_async_context(grpc.aio.insecure_channel(target)),
                authenticated=False,
            )
        ]
        expired, expired_id = await _key(admin, "expired")
        await _grant(admin, "expired", Role.ADMIN)
        # an expiry in the past, set behind the server's back (the API refuses to make one);
        # the key was never used, so no process holds it verified
        await db.execute(
            "UPDATE api_keys SET expire_time = now() - interval '1 minute' WHERE key_id = $1",
            expired_id,
        )
        callers.append(Caller("expired", await channel(expired), authenticated=False))
        revoked, revoked_id = await _key(admin, "revoked")
        await _grant(admin, "revoked", Role.ADMIN)
        await admin.identity.RevokeApiKey(ids.RevokeApiKeyRequest(key_id=revoked_id))
        callers.append(Caller("revoked", await channel(revoked), authenticated=False))
        for role in (Role.VIEWER, Role.EDITOR, Role.APPROVER):
            name = role.name.lower()
            key, _ = await _key(admin, name)
            await _grant(admin, name, role, TEAM)
            callers.append(Caller(name, await channel(key), team_role=role))
        key, _ = await _key(admin, "root")
        await _grant(admin, "root", Role.ADMIN)
        callers.append(Caller("admin", await channel(key), global_admin=True))
        key, _ = await _key(admin, "outsider")
        await _grant(admin, "outsider", Role.EDITOR, OTHER)
        callers.append(Caller("other-editor", await channel(key), other_role=Role.EDITOR))
        requester, _ = await _key(admin, "requester")
        await _grant(admin, "requester", Role.EDITOR, TEAM)
        yield callers, requester
