"""The authorizing gate with doubles of our own ports (Authenticator, DenialLog): deny by
default, open methods never authenticate, a token ahead of the grants is refused rather
than decided on older bindings, refused mutations are recorded, and an upload is decided
on the version its first message names without losing that message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from modelreg.api.authorization import AuthorizingGate
from modelreg.api.interceptors import _CheckedRequests
from modelreg.domain.access import Binding, BindingKey, Role, SubjectKind
from modelreg.domain.errors import PermissionDenied, Unauthenticated, Unavailable
from modelreg.domain.grants import GrantCache
from modelreg.domain.principals import Denial, Principal, Proof
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import registry_service_pb2 as rs

ALICE = Principal("alice", Proof.API_KEY)
R = "/modelreg.v1.RegistryService/"


class Alice:
    calls = 0

    async def authenticate(self, context: Any) -> Principal:
        self.calls += 1
        return ALICE


class Nobody:
    async def authenticate(self, context: Any) -> Principal:
        raise Unauthenticated("no credentials")


class Kept:
    def __init__(self) -> None:
        self.denials: list[Denial] = []

    async def record(self, denial: Denial) -> None:
        self.denials.append(denial)


def _gate(role: Role | None = None, authenticator: Any = None) -> tuple[AuthorizingGate, Kept]:
    grants = GrantCache()
    grants.revision = 10
    if role is not None:
        grants.bindings.add(Binding(BindingKey(role, SubjectKind.PRINCIPAL, "alice", "ml")))
    kept = Kept()
    gate = AuthorizingGate(authenticator or Alice(), grants, denials=kept, wait_seconds=0)
    return gate, kept


async def test_a_method_without_a_rule_is_denied() -> None:
    gate, _ = _gate(Role.ADMIN)
    with pytest.raises(PermissionDenied) as caught:
        await gate.admit("/modelreg.v1.NewService/Anything", rs.GetModelRequest(), None)  # type: ignore[arg-type]
    assert caught.value.reason == "NO_PERMISSION_RULE"


async def test_health_is_open_and_never_authenticates() -> None:
    gate, _ = _gate(authenticator=Nobody())
    principal = await gate.admit("/grpc.health.v1.Health/Check", object(), None)  # type: ignore[arg-type]
    assert not principal.authenticated
    with pytest.raises(Unauthenticated):
        await gate.admit(R + "GetModel", rs.GetModelRequest(name="namespaces/ml/models/m"), None)  # type: ignore[arg-type]


async def test_a_refused_mutation_is_recorded_and_a_refused_read_is_not() -> None:
    gate, kept = _gate(Role.VIEWER)
    read = rs.GetModelRequest(name="namespaces/ml/models/m")
    assert await gate.admit(R + "GetModel", read, None) is ALICE  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied):
        await gate.admit(R + "GetModel", rs.GetModelRequest(name="namespaces/cv/models/m"), None)  # type: ignore[arg-type]
    assert kept.denials == []
    alias = rs.SetAliasRequest(name="namespaces/ml/models/m/aliases/prod", version_number=1)
    with pytest.raises(PermissionDenied) as caught:
        await gate.admit(R + "SetAlias", alias, None)  # type: ignore[arg-type]
    assert caught.value.metadata == {
        "permission": "aliases.move",
        "namespace": "ml",
        "principal": "alice",
    }
    (denial,) = kept.denials
    assert (denial.resource, denial.permission) == (alias.name, "aliases.move")


async def test_a_token_ahead_of_the_grants_is_refused_not_decided() -> None:
    gate, _ = _gate(Role.VIEWER)
    ahead = rs.GetModelVersionRequest(name="namespaces/ml/models/m/versions/1", min_revision=11)
    with pytest.raises(Unavailable) as caught:
        await gate.admit(R + "GetModelVersion", ahead, None)  # type: ignore[arg-type]
    assert caught.value.reason == "GRANTS_BEHIND"
    batch = rs.BatchGetModelVersionsRequest(references=["ml/m:1"], min_revision=11)
    with pytest.raises(Unavailable):  # per-item calls too
        await gate.admit(R + "BatchGetModelVersions", batch, None)  # type: ignore[arg-type]
    ahead.min_revision = 10
    assert await gate.admit(R + "GetModelVersion", ahead, None) is ALICE  # type: ignore[arg-type]


async def _messages(*messages: art.UploadFileRequest) -> AsyncIterator[art.UploadFileRequest]:
    for message in messages:
        yield message


async def test_an_upload_is_decided_on_its_first_message_which_stays_readable() -> None:
    header = art.UploadHeader(version="namespaces/ml/models/m/versions/1", path="w")
    first, second = art.UploadFileRequest(header=header), art.UploadFileRequest(data=b"x")
    method = "/modelreg.v1.ArtifactService/UploadFile"
    gate, _ = _gate(Role.EDITOR)
    stream = _CheckedRequests(_messages(first, second))
    assert await gate.admit(method, stream, None) is ALICE  # type: ignore[arg-type]
    assert [m async for m in stream] == [first, second]
    viewer, kept = _gate(Role.VIEWER)
    with pytest.raises(PermissionDenied):
        await viewer.admit(method, _CheckedRequests(_messages(first)), None)  # type: ignore[arg-type]
    assert [d.permission for d in kept.denials] == ["models.write"]
