"""TLS for the clients' channels: `tls=` of Client and AsyncClient.

tls=None (default)  from the environment: TLS if MODELREG_TLS_CA_FILE or
                    MODELREG_TLS_CLIENT_CERT_FILE is set (MODELREG_TLS=on: TLS with the
                    system's roots), else plaintext
tls=False           plaintext
tls=True            TLS, the server checked against the system's root certificates
tls=Tls(...)        TLS with a private CA, a client certificate (mutual TLS), or
                    another name to check the server's certificate for
tls=grpc.ChannelCredentials  as given
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

ENV_CA = "MODELREG_TLS_CA_FILE"
ENV_CERT = "MODELREG_TLS_CLIENT_CERT_FILE"
ENV_KEY = "MODELREG_TLS_CLIENT_KEY_FILE"
ENV_TLS = "MODELREG_TLS"
ENV_SERVER_NAME = "MODELREG_TLS_SERVER_NAME"


@dataclass(frozen=True)
class Tls:
    """How a client checks the server, and which certificate it shows (PEM files)."""

    ca_file: str | os.PathLike[str] | None = None  # None: the system's root certificates
    cert_file: str | os.PathLike[str] | None = None  # client certificate, for mutual TLS
    key_file: str | os.PathLike[str] | None = None  # its private key
    server_name: str | None = None  # the name the server's certificate must carry

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials these files make."""
        if (self.cert_file is None) != (self.key_file is None):
            raise TlsSettingError("Tls: cert_file and key_file go together (mutual TLS)")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "ca_file"),
            private_key=_read(self.key_file, "key_file"),
            certificate_chain=_read(self.cert_file, "cert_file"),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Tls | None:
        """The TLS the MODELREG_TLS_* client variables ask for; None for plaintext."""
        env = os.environ if environ is None else environ
        ca, cert, key = env.get(ENV_CA), env.get(ENV_CERT), env.get(ENV_KEY)
        if not (ca or cert or key or env.get(ENV_TLS, "").lower() in ("on", "1", "true")):
            return None
        if bool(cert) != bool(key):
            raise TlsSettingError(f"set {ENV_CERT} and {ENV_KEY} together (mutual TLS), or neither")
        return cls(ca or None, cert or None, key or None, env.get(ENV_SERVER_NAME) or None)


TlsOption = bool | Tls | grpc.ChannelCredentials | None


class TlsSettingError(ValueError):
    """A TLS setting of the client cannot be used (the message names it)."""


def channel_security(
    tls: TlsOption,
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, str]]]:
    """The credentials (None: plaintext) and channel options `tls` asks for."""
    if tls is None:
        tls = Tls.from_env() or False
    if tls is False:
        return None, []
    if tls is True:
        tls = Tls()
    if isinstance(tls, Tls):
        options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
        return tls.credentials(), options
    return tls, []


def sync_channel(target: str, tls: TlsOption) -> grpc.Channel:
    """A blocking channel to `target`, secured as `tls` says."""
    credentials, options = channel_security(tls)
    if credentials is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, credentials, options=options)


def aio_channel(target: str, tls: TlsOption) -> grpc.aio.Channel:
    """An asyncio channel to `target`, secured as `tls` says."""
    credentials, options = channel_security(tls)
    if credentials is None:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, credentials, options=options)


def _read(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsSettingError(f"Tls.{what}: cannot read {path}: {exc.strerror}") from exc
