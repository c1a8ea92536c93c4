"""Request builders for IdentityService (each builder's docstring is its method's)."""

from __future__ import annotations

from datetime import datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from modelreg.client.calls import IDENTITY, Call, Pages
from modelreg.v1 import identity_service_pb2 as ids


def whoami(*, timeout: float | None = None) -> Call[ids.WhoAmIResponse]:
    """Who the server takes this client for: name, proof, groups, key id."""
    return Call("WhoAmI", ids.WhoAmIRequest(), lambda r: r, True, timeout, IDENTITY)


def create_api_key(
    principal: str,
    *,
    service: bool = False,
    description: str = "",
    ttl: timedelta | None = None,
    expire_time: datetime | None = None,
    timeout: float | None = None,
) -> Call[ids.CreateApiKeyResponse]:
    """Make an API key for `principal` (a service account with `service`); the reply's
    `key` is shown this once. Not retried once sent (a retry could make a second key)."""
    kind = ids.PRINCIPAL_KIND_SERVICE if service else ids.PRINCIPAL_KIND_UNSPECIFIED
    request = ids.CreateApiKeyRequest(principal=principal, kind=kind, description=description)
    if ttl is not None:
        request.ttl.CopyFrom(_duration(ttl))
    elif expire_time is not None:
        stamp = Timestamp()
        stamp.FromDatetime(expire_time)
        request.expire_time.CopyFrom(stamp)
    return Call("CreateApiKey", request, lambda r: r, False, timeout, IDENTITY)


def list_api_keys(
    *, principal: str = "", page_size: int | None = None, timeout: float | None = None
) -> Pages[ids.ApiKey]:
    """Iterate over API keys (never their secrets), newest first: `principal`'s, or all."""
    return Pages(
        "ListApiKeys",
        lambda token: ids.ListApiKeysRequest(
            principal=principal, page_size=page_size or 0, page_token=token
        ),
        lambda reply: reply.api_keys,
        timeout,
        IDENTITY,
    )


def revoke_api_key(key_id: str, *, timeout: float | None = None) -> Call[ids.ApiKey]:
    """Revoke an API key by its id; refused by every server process from then on."""
    request = ids.RevokeApiKeyRequest(key_id=key_id)
    return Call("RevokeApiKey", request, lambda r: r.api_key, True, timeout, IDENTITY)


def _duration(value: timedelta) -> Duration:
    duration = Duration()
    duration.FromTimedelta(value)
    return duration
