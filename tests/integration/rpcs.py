"""Every RPC the server offers, read from the service descriptors (so a new RPC is in the
list without anyone adding it), and a way to call any of them with raw bytes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from modelreg.v1 import (
    access_service_pb2,
    admin_service_pb2,
    approval_service_pb2,
    artifact_service_pb2,
    audit_service_pb2,
    identity_service_pb2,
    lineage_service_pb2,
    registry_service_pb2,
    watch_service_pb2,
    webhook_service_pb2,
)

SERVICES = [
    module.DESCRIPTOR.services_by_name[name]
    for module, name in (
        (registry_service_pb2, "RegistryService"),
        (artifact_service_pb2, "ArtifactService"),
        (admin_service_pb2, "AdminService"),
        (webhook_service_pb2, "WebhookService"),
        (watch_service_pb2, "WatchService"),
        (audit_service_pb2, "AuditService"),
        (approval_service_pb2, "ApprovalService"),
        (access_service_pb2, "AccessService"),
        (identity_service_pb2, "IdentityService"),
        (lineage_service_pb2, "LineageService"),
    )
]
# Server streams that never end on their own: a call that opened reads the first message
# (Watch opens with a bookmark) and hangs up.
ENDLESS = frozenset({"Watch"})


@dataclass(frozen=True)
class Rpc:
    """One method of one of our services."""

    method: MethodDescriptor

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def request_type(self) -> Any:
        return message_factory.GetMessageClass(self.method.input_type)

    @property
    def client_streaming(self) -> bool:
        return bool(self.method.client_streaming)

    async def call(
        self, channel: grpc.aio.Channel, body: bytes | Sequence[bytes], *, deadline: float = 10
    ) -> None:
        """Send `body` (a stream of bodies for a client-streaming RPC) as it is, read the
        whole answer (of an ENDLESS stream, its first message), and raise its AioRpcError
        if it failed (DEADLINE_EXCEEDED after `deadline` seconds: no call may hang)."""
        identity = {"request_serializer": None, "response_deserializer": None}
        if self.client_streaming:
            bodies = [body] if isinstance(body, bytes) else list(body)
            stream = channel.stream_unary(self.path, **identity)
            await stream(_each(bodies), timeout=deadline)
            return
        assert isinstance(body, bytes)
        if self.method.server_streaming:
            call = channel.unary_stream(self.path, **identity)(body, timeout=deadline)
            async for _ in call:
                if self.name in ENDLESS:
                    break
            call.cancel()  # no-op once the stream ended
            return
        await channel.unary_unary(self.path, **identity)(body, timeout=deadline)


async def _each(bodies: list[bytes]) -> Any:
    for body in bodies:
        yield body


RPCS = [Rpc(method) for service in SERVICES for method in service.methods]
BY_NAME = {rpc.name: rpc for rpc in RPCS}
assert len(BY_NAME) == len(RPCS), "RPC names must be unique across our services"


async def stored_state(db: asyncpg.Connection) -> tuple[Any, ...]:
    """Counts and revision sums of every table a call can write: equal before and after
    a call means the call wrote nothing."""
    return tuple(
        await db.fetchrow(
            """SELECT (SELECT count(*) FROM role_bindings), (SELECT count(*) FROM webhooks),
                      (SELECT count(*) FROM webhook_redeliveries),
                      (SELECT count(*) FROM namespaces), (SELECT count(*) FROM models),
                      (SELECT coalesce(sum(revision), 0) FROM models),
                      (SELECT count(*) FROM model_versions),
                      (SELECT coalesce(sum(revision), 0) FROM model_versions),
                      (SELECT count(*) FROM aliases), (SELECT count(*) FROM events),
                      (SELECT count(*) FROM denials),
                      (SELECT count(*) FROM request_ids), (SELECT count(*) FROM version_files),
                      (SELECT count(*) FROM upload_sessions), (SELECT count(*) FROM blobs),
                      (SELECT count(*) FROM principals), (SELECT count(*) FROM api_keys),
                      (SELECT count(*) FROM api_keys WHERE revoke_time IS NOT NULL),
                      (SELECT count(*) FROM lineage_nodes), (SELECT count(*) FROM lineage_edges),
                      (SELECT count(*) FROM version_datasets)"""
        )
    )
