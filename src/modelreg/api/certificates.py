"""Client certificates (mutual TLS) -> a Principal.

With MODELREG_TLS_CLIENT_CA_FILE the listener refuses, in the TLS handshake, every client
without a certificate chaining to that CA (app.py), so a call that reaches this code has
a verified one. Its identity is its first subject alternative name (a SPIFFE URI, a DNS
name...), else its subject's common name, prefixed `x509:` so no certificate can name
itself after an API-key or OIDC principal.
"""

from __future__ import annotations

from modelreg.api.identity import Context
from modelreg.domain.errors import Unauthenticated
from modelreg.domain.principals import Principal, Proof

PREFIX = "x509:"
_SAN = "x509_subject_alternative_name"
_CN = "x509_common_name"


class CertificateCredentials:
    """The Credentials port for a verified client certificate."""

    async def principal(self, context: Context) -> Principal | None:
        auth = context.auth_context() or {}
        names = [*auth.get(_SAN, ()), *auth.get(_CN, ())]
        if not names:
            return None  # no peer certificate (plaintext, or TLS without client auth)
        name = PREFIX + names[0].decode("utf-8", "replace")
        if not 0 < len(name) <= 256 or not all("!" <= c <= "~" for c in name):
            raise Unauthenticated(
                "the client certificate's first subject alternative name (or common name)"
                " must be printable ASCII without spaces, at most 250 characters",
                reason="CERTIFICATE_NAME_UNUSABLE",
            )
        return Principal(name, Proof.CERTIFICATE)
