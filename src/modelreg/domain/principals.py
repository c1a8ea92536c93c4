"""Who is calling, as the domain sees it: one `Principal` per call, whatever proved it
(an API key, an OIDC/JWT bearer token, a client certificate, or nothing when the server
runs without authentication)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Proof(StrEnum):
    """How the caller proved who it is."""

    API_KEY = "api_key"
    JWT = "jwt"
    CERTIFICATE = "certificate"
    NONE = "none"  # authentication is off (MODELREG_AUTH=off, loopback only)


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller: its name (what events record as the actor), the groups it belongs to
    (role bindings may name a group), and how it proved who it is."""

    name: str
    proof: Proof
    groups: frozenset[str] = field(default_factory=frozenset)
    key_id: str = ""  # the API key's public prefix, when proof is API_KEY

    @property
    def authenticated(self) -> bool:
        """Whether credentials proved the name (with authentication off, nothing does)."""
        return self.proof is not Proof.NONE


@dataclass(frozen=True, slots=True)
class Denial:
    """A refused call by a known caller, kept for the audit (a refused call changes no
    registry state; this record is its only trace)."""

    actor: str
    method: str  # the full gRPC method, "/modelreg.v1.RegistryService/SetAlias"
    resource: str  # the resource the call named ("" when it named none)
    permission: str  # the permission it lacked
    reason: str  # why, as the caller was told


class DenialLog(Protocol):
    """Where refused mutations are recorded (their own table, outside the event chain,
    so a refusal changes no revision)."""

    async def record(self, denial: Denial) -> None:
        """Keep `denial`; never raises for a backend failure (a refusal must not turn
        into UNAVAILABLE because the audit store is slow)."""
        ...
