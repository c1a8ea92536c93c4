"""A double of our own Gate port for the transport-credential tests: the first Credentials
source that recognises the call's credential names the caller (no authorization), and
every admitted Principal is recorded for the test to look at."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelreg.api.identity import Context, Credentials
from modelreg.domain.errors import Unauthenticated
from modelreg.domain.principals import Principal


class CredentialsGate:
    """Admit a call as the Principal its credentials prove; refuse one without any."""

    def __init__(self, sources: Sequence[Credentials]) -> None:
        self._sources = list(sources)
        self.admitted: list[Principal] = []

    async def admit(self, method: str, request: Any, context: Context) -> Principal:
        for source in self._sources:
            principal = await source.principal(context)
            if principal is not None:
                self.admitted.append(principal)
                return principal
        raise Unauthenticated("no credentials this test server knows", reason="NO_CREDENTIALS")
