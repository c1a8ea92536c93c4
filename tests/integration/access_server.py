"""A modelreg server with authorization on, authenticated by a test double of our own
`Authenticator` port (until API keys land, see the report): the metadata
`authorization: Bearer test:<name>[:group,group]` proves `name` (and its groups)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from modelreg.api.identity import Context
from modelreg.app import RunningServer, start_server
from modelreg.config import Settings
from modelreg.domain.errors import Unauthenticated
from modelreg.domain.principals import Denial, Principal, Proof
from modelreg.v1 import (
    access_service_pb2_grpc,
    artifact_service_pb2_grpc,
    registry_service_pb2_grpc,
    watch_service_pb2_grpc,
)

ROOT = "root"  # a global admin, bound in the database before the server starts


class TestAuthenticator:
    """The Authenticator port for tests: `Bearer test:alice:ml-team,ops` is alice."""

    async def authenticate(self, context: Context) -> Principal:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, token = value.partition(" ")
                kind, _, rest = token.partition(":")
                if scheme == "Bearer" and kind == "test" and rest:
                    name, _, groups = rest.partition(":")
                    found = frozenset(g for g in groups.split(",") if g)
                    return Principal(name, Proof.API_KEY, found, key_id="test")
        raise Unauthenticated("no credentials; send `authorization: Bearer test:<name>`")


@dataclass
class RecordingDenialLog:
    """The DenialLog port, keeping what it is told (the audit store's adapter comes later)."""

    denials: list[Denial] = field(default_factory=list)

    async def record(self, denial: Denial) -> None:
        self.denials.append(denial)


def as_(name: str, groups: Sequence[str] = ()) -> tuple[tuple[str, str], ...]:
    """The call metadata that authenticates as `name`."""
    suffix = f":{','.join(groups)}" if groups else ""
    return (("authorization", f"Bearer test:{name}{suffix}"),)


@dataclass
class AccessServer:
    """A running server with authorization on, and stubs on one channel to it."""

    running: RunningServer
    channel: grpc.aio.Channel
    registry: registry_service_pb2_grpc.RegistryServiceAsyncStub
    artifacts: artifact_service_pb2_grpc.ArtifactServiceAsyncStub
    access: access_service_pb2_grpc.AccessServiceAsyncStub
    watch: watch_service_pb2_grpc.WatchServiceAsyncStub
    denials: RecordingDenialLog


async def serve_with_access(database_url: str, home: Path, stack: AsyncExitStack) -> AccessServer:
    settings = Settings(
        address="127.0.0.1:0", postgres_url=database_url, home=home, grace_seconds=1
    )
    denials = RecordingDenialLog()
    running = await start_server(
        settings, stack, authenticator=TestAuthenticator(), denials=denials
    )
    channel = await stack.enter_async_context(
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    )
    return AccessServer(
        running,
        channel,
        registry_service_pb2_grpc.RegistryServiceStub(channel),
        artifact_service_pb2_grpc.ArtifactServiceStub(channel),
        access_service_pb2_grpc.AccessServiceStub(channel),
        watch_service_pb2_grpc.WatchServiceStub(channel),
        denials,
    )
