"""IdentityService: parse the request, call the domain, convert the answer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import grpc

from modelreg.api.convert import timestamp
from modelreg.api.identity import actor_of, caller
from modelreg.api.services import add_service
from modelreg.domain.consistency import Consistency
from modelreg.domain.errors import InvalidArgument
from modelreg.domain.identity import ApiKey, ApiKeys, PrincipalKind
from modelreg.domain.principals import Proof
from modelreg.v1 import identity_service_pb2 as ids

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

SERVICE = ids.DESCRIPTOR.services_by_name["IdentityService"]
_KINDS: dict[int, PrincipalKind | None] = {
    ids.PRINCIPAL_KIND_UNSPECIFIED: None,
    ids.PRINCIPAL_KIND_PERSON: PrincipalKind.PERSON,
    ids.PRINCIPAL_KIND_SERVICE: PrincipalKind.SERVICE,
}
_KIND_TO_PROTO = {PrincipalKind.PERSON: ids.PRINCIPAL_KIND_PERSON,
                  PrincipalKind.SERVICE: ids.PRINCIPAL_KIND_SERVICE}  # fmt: skip
_PROOFS = {
    Proof.API_KEY: ids.PROOF_API_KEY,
    Proof.JWT: ids.PROOF_JWT,
    Proof.CERTIFICATE: ids.PROOF_CERTIFICATE,
    Proof.NONE: ids.PROOF_NONE,
}
MAX_TTL_SECONDS = 100 * 366 * 86400  # a century: past that, say "never" (no expiry)


def add_identity_service(
    servicer: IdentityServicer, server: grpc.aio.Server, *, consistency: Consistency
) -> None:
    """Register every IdentityService RPC."""
    add_service(server, servicer, SERVICE, ids, consistency=consistency)


class IdentityServicer:
    """The IdentityService RPCs; errors are mapped by api.interceptors."""

    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    async def WhoAmI(self, request: ids.WhoAmIRequest, context: Context) -> ids.WhoAmIResponse:
        who = caller()
        return ids.WhoAmIResponse(
            name=who.name, proof=_PROOFS[who.proof], groups=sorted(who.groups), key_id=who.key_id
        )

    async def CreateApiKey(
        self, request: ids.CreateApiKeyRequest, context: Context
    ) -> ids.CreateApiKeyResponse:
        created, key = await self._keys.create(
            principal=request.principal,
            kind=_kind(request.kind),
            description=request.description,
            expire_time=_expiry(request),
            actor=actor_of(context),
        )
        return ids.CreateApiKeyResponse(api_key=key_to_proto(created), key=key.reveal())

    async def ListApiKeys(
        self, request: ids.ListApiKeysRequest, context: Context
    ) -> ids.ListApiKeysResponse:
        page = await self._keys.list(
            principal=request.principal, size=request.page_size, token=request.page_token
        )
        return ids.ListApiKeysResponse(
            api_keys=[key_to_proto(k) for k in page.items], next_page_token=page.next_token
        )

    async def RevokeApiKey(
        self, request: ids.RevokeApiKeyRequest, context: Context
    ) -> ids.RevokeApiKeyResponse:
        revoked = await self._keys.revoke(key_id=request.key_id, actor=actor_of(context))
        return ids.RevokeApiKeyResponse(api_key=key_to_proto(revoked))


def key_to_proto(key: ApiKey) -> ids.ApiKey:
    return ids.ApiKey(
        name=key.name,
        key_id=key.key_id,
        principal=key.principal,
        kind=_KIND_TO_PROTO[key.kind],
        description=key.description,
        create_time=timestamp(key.create_time),
        creator=key.creator,
        expire_time=timestamp(key.expire_time),
        revoke_time=timestamp(key.revoke_time),
    )


def _kind(value: int) -> PrincipalKind | None:
    if value not in _KINDS:
        raise InvalidArgument.field("kind", "must be PRINCIPAL_KIND_PERSON or _SERVICE")
    return _KINDS[value]


def _expiry(request: ids.CreateApiKeyRequest) -> datetime | None:
    which = request.WhichOneof("expiry")
    if which == "ttl":
        ttl = request.ttl
        if ttl.nanos < 0 or ttl.nanos > 999_999_999 or ttl.seconds < 1:
            raise InvalidArgument.field("ttl", "must be at least one second")
        if ttl.seconds > MAX_TTL_SECONDS:
            raise InvalidArgument.field("ttl", "must be at most a century (or leave it unset)")
        return datetime.now(UTC) + ttl.ToTimedelta()
    if which == "expire_time":
        stamp = request.expire_time
        if not 0 <= stamp.nanos <= 999_999_999 or not 0 < stamp.seconds < 253402300800:
            raise InvalidArgument.field("expire_time", "must be a time between 1970 and 9999")
        return stamp.ToDatetime(tzinfo=UTC)
    return None
