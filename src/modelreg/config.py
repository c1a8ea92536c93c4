"""Settings, read from the environment once and validated at start-up.

MODELREG_ADDRESS             HOST:PORT to listen on (127.0.0.1:50051)
MODELREG_HOME                data directory: embedded Postgres, blobs (the user's data dir)
MODELREG_POSTGRES_URL        PostgreSQL to use; unset = embedded in MODELREG_HOME
MODELREG_POSTGRES_READ_URL   read replica for lookups that miss the caches (unset)
MODELREG_POSTGRES_POOL_SIZE  connections per process (10)
MODELREG_POSTGRES_PROBE_SECONDS  how often each process checks that PostgreSQL answers;
                             health is NOT_SERVING while it does not (1.0)
MODELREG_POSTGRES_PROBE_TIMEOUT_SECONDS  how long a check waits for an answer (2.0)
MODELREG_POSTGRES_RESTARTS   embedded only: starts of a PostgreSQL that died allowed within
                             a minute before the server gives up and exits 1; 0 = none (5)
MODELREG_REDIS_URL           Redis for the shared L2 cache; unset = L1 + PostgreSQL only
MODELREG_REDIS_TIMEOUT_SECONDS  how long a lookup waits for Redis before using PostgreSQL (0.05)
MODELREG_CACHE_L1_ENTRIES    in-process cache size in entries; 0 turns L1 off (100000)
MODELREG_CACHE_L1_BYTES      in-process cache size in bytes (268435456)
MODELREG_CACHE_L1_TTL_SECONDS  bound on how stale an L1 entry can be (1.0)
MODELREG_CACHE_L2_TTL_SECONDS  lifetime of an L2 entry (300)
MODELREG_CACHE_NEGATIVE_TTL_SECONDS  lifetime of a cached NOT_FOUND (5)
MODELREG_CONSISTENCY_WAIT_SECONDS  how long a lookup carrying min_revision waits for this
                             process's cache to follow the change log that far before it
                             reads past the cache (0.05; never beyond the call's deadline)
MODELREG_WORKERS             server processes sharing the port (one per core)
MODELREG_GRACE_SECONDS       how long shutdown waits for in-flight calls (10)
MODELREG_LOG_LEVEL           DEBUG, INFO, WARNING or ERROR (INFO)
MODELREG_LOG_FORMAT          text, or json: one JSON object per line (text)
MODELREG_ACCESS_LOG          on: a log line per call (request id, principal, method, status,
                             latency; logger modelreg.access); off (off)
MODELREG_METRICS_ADDRESS     HOST:PORT of a Prometheus endpoint (/metrics) with every worker's
                             numbers; unset = no metrics (e.g. 0.0.0.0:9464)
MODELREG_TRACING             off, or otlp: OpenTelemetry spans of every call, its cache tiers
                             and SQL, exported to the OTLP endpoint that the standard
                             OTEL_EXPORTER_OTLP_ENDPOINT names (off)
MODELREG_BLOB_URL            where artifact bytes live: file:///path or s3://bucket/prefix
                             (unset = file://MODELREG_HOME/blobs)
MODELREG_S3_ENDPOINT_URL     S3-compatible endpoint for s3:// blob URLs, e.g. MinIO's (unset = AWS)
MODELREG_BLOB_READ           how downloads read the filesystem store: mmap (one copy; a media
                             error ends the worker) or pread (twice the CPU; an error is
                             one UNAVAILABLE) (mmap)
MODELREG_UPLOAD_LEASE_SECONDS  how long an upload stays claimed by a server that died
                             mid-stream before another may resume it (30)
MODELREG_ORPHAN_GRACE_SECONDS  how long a blob no live version holds is kept (86400)
MODELREG_COLLECT_INTERVAL_SECONDS  how often each process collects orphaned blobs;
                             0 turns collection off (3600)
MODELREG_WEBHOOKS            on: this process delivers webhooks (sharing the work with the
                             others through leases); off: it only serves WebhookService (on)
MODELREG_WEBHOOKS_TIMEOUT_SECONDS  how long one delivery waits for the receiver's answer;
                             at most half the lease (10)
MODELREG_WEBHOOKS_LEASE_SECONDS  how long a subscription stays with a process that stopped
                             renewing (died) before another one delivers it (30)
MODELREG_WEBHOOKS_FIRST_BACKOFF_SECONDS  wait before the first retry; doubled per retry (1)
MODELREG_WEBHOOKS_MAX_BACKOFF_SECONDS  longest wait between retries, unless the receiver's
                             Retry-After asks for more (up to an hour) (300)
MODELREG_WEBHOOKS_LOG_KEEP   delivery attempts kept per subscription (1000)
MODELREG_WATCH_BUFFER_EVENTS  events each Watch stream may hold for its client; one that
                             falls further behind is fed from the database instead (1000)
MODELREG_WATCH_STALL_SECONDS  how long a Watch stream waits for a client that reads nothing
                             before cutting it with RESOURCE_EXHAUSTED (30)
MODELREG_DENIALS_KEEP_DAYS   how long refused calls stay in the audit's denials table (90)
MODELREG_AUTH                on (default): every call but health and reflection proves who
                             it is; off: no authentication, refused unless MODELREG_ADDRESS
                             is a loopback address
MODELREG_TLS_CERT_FILE       PEM certificate (chain) the listener serves TLS with (unset:
                             plaintext); needs MODELREG_TLS_KEY_FILE
MODELREG_TLS_KEY_FILE        PEM private key of that certificate
MODELREG_TLS_CLIENT_CA_FILE  mutual TLS: PEM CA(s) every client certificate must chain to;
                             a client without one is refused in the handshake, and the
                             certificate's first SAN (else its CN) is the caller, "x509:NAME"
MODELREG_OIDC_ISSUER         accept OIDC/JWT bearer tokens from this issuer (the `iss`
                             claim, exactly); unset: no JWTs accepted
MODELREG_OIDC_AUDIENCE       the `aud` a token must name (this registry)
MODELREG_OIDC_JWKS_URL       where the issuer publishes its keys (https://, or http:// on
                             loopback); or
MODELREG_OIDC_JWKS_FILE      a JWKS file (re-read like the URL is fetched)
MODELREG_OIDC_JWKS_CA_FILE   PEM CA to verify the JWKS URL's server with (unset: system roots)
MODELREG_OIDC_PRINCIPAL_CLAIM  the claim naming the caller (sub)
MODELREG_OIDC_GROUPS_CLAIM   the claim listing the caller's groups (groups)
MODELREG_OIDC_PRINCIPAL_PREFIX  put before the claimed principal and each group, so an IdP
                             user cannot be mistaken for a local one (oidc:)
MODELREG_OIDC_LEEWAY_SECONDS  clock skew allowed on exp, nbf and iat (30; at most 300)
MODELREG_OIDC_JWKS_REFRESH_SECONDS  age after which the keys are fetched again (300)
MODELREG_OIDC_JWKS_MIN_REFRESH_SECONDS  least time between two fetches, however many tokens
                             name an unknown key id (10)
MODELREG_OIDC_TOKEN_CACHE_ENTRIES  verified tokens kept until their exp; 0 = none (10000)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

DEFAULT_ADDRESS = "127.0.0.1:50051"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable to change."""


def default_home() -> Path:
    return platformdirs.user_data_path("modelreg")


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start; see the module docstring for the variables."""

    address: str = DEFAULT_ADDRESS
    home: Path = field(default_factory=default_home)
    postgres_url: str | None = None
    postgres_read_url: str | None = None
    postgres_pool_size: int = 10
    postgres_probe_seconds: float = 1.0
    postgres_probe_timeout_seconds: float = 2.0
    postgres_restarts: int = 5
    redis_url: str | None = None
    redis_timeout_seconds: float = 0.05
    cache_l1_entries: int = 100_000
    cache_l1_bytes: int = 256 * 1024 * 1024
    cache_l1_ttl_seconds: float = 1.0
    cache_l2_ttl_seconds: float = 300.0
    cache_negative_ttl_seconds: float = 5.0
    consistency_wait_seconds: float = 0.05
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    grace_seconds: float = 10.0
    log_level: str = "INFO"
    metrics_address: str | None = None
    tracing: str = "off"
    log_format: str = "text"
    access_log: str = "off"
    blob_url: str | None = None
    s3_endpoint_url: str | None = None
    blob_read: str = "mmap"
    upload_lease_seconds: float = 30.0
    orphan_grace_seconds: float = 24 * 3600.0
    collect_interval_seconds: float = 3600.0
    webhooks: str = "on"
    webhooks_timeout_seconds: float = 10.0
    webhooks_lease_seconds: float = 30.0
    webhooks_first_backoff_seconds: float = 1.0
    webhooks_max_backoff_seconds: float = 300.0
    webhooks_log_keep: int = 1000
    # how long a change request of a protected alias waits for approvals (a week)
    change_request_ttl_seconds: int = 7 * 24 * 3600
    watch_buffer_events: int = 1000
    watch_stall_seconds: float = 30.0
    denials_keep_days: float = 90.0
    # "on": every call but health and reflection must prove who it is; "off" admits
    # everyone as the actor it declares, and is refused unless the server binds to loopback
    auth: str = "on"
    # TLS on the listener; with a client CA, mutual TLS (client certificates required)
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    # OIDC / JWT bearer tokens (api/oidc.py); off unless an issuer is set
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_jwks_file: str | None = None
    oidc_jwks_ca_file: str | None = None
    oidc_principal_claim: str = "sub"
    oidc_groups_claim: str = "groups"
    oidc_principal_prefix: str = "oidc:"
    oidc_leeway_seconds: float = 30.0
    oidc_jwks_refresh_seconds: float = 300.0
    oidc_jwks_min_refresh_seconds: float = 10.0
    oidc_token_cache_entries: int = 10_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read MODELREG_* variables, then apply non-None `overrides` (command-line flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"MODELREG_{f.name.upper()}")
            if raw:
                values[f.name] = _parse(f.name, raw)
        settings = cls(**values)
        given = {
            k: _parse(k, v) if isinstance(v, str) else v
            for k, v in overrides.items()
            if v is not None
        }
        return replace(settings, **given).validated()

    def validated(self) -> Settings:
        """Raise ConfigError naming the variable of the first bad setting."""
        _check_address("MODELREG_ADDRESS (--address)", self.address)
        if self.metrics_address is not None:
            _check_address("MODELREG_METRICS_ADDRESS", self.metrics_address)
        for name in ("postgres_url", "postgres_read_url"):
            url = getattr(self, name)
            if url and not url.startswith(("postgres://", "postgresql://")):
                raise ConfigError(f"MODELREG_{name.upper()} must start with postgresql://")
        if self.workers < 1 or self.postgres_pool_size < 1:
            raise ConfigError("MODELREG_WORKERS and MODELREG_POSTGRES_POOL_SIZE must be at least 1")
        if self.watch_buffer_events < 1:
            raise ConfigError("MODELREG_WATCH_BUFFER_EVENTS must be at least 1")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("MODELREG_REDIS_URL must start with redis://, rediss:// or unix://")
        _check_durations(self)
        _check_blob_url(self.blob_url)
        if self.blob_read not in ("mmap", "pread"):
            raise ConfigError("MODELREG_BLOB_READ must be mmap or pread")
        _check_webhooks(self)
        _check_observability(self)
        _check_auth(self)
        _check_tls(self)
        _check_oidc(self)
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("MODELREG_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return self


def _check_observability(settings: Settings) -> None:
    if settings.tracing not in ("off", "otlp"):
        raise ConfigError("MODELREG_TRACING must be off or otlp")
    if settings.log_format not in ("text", "json"):
        raise ConfigError("MODELREG_LOG_FORMAT must be text or json")
    if settings.access_log not in ("off", "on"):
        raise ConfigError("MODELREG_ACCESS_LOG must be off or on")


def _check_address(variable: str, address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{variable} must be HOST:PORT, got {address!r}")


_POSITIVE = (
    "redis_timeout_seconds",
    "cache_l2_ttl_seconds",
    "cache_negative_ttl_seconds",
    "upload_lease_seconds",
    "postgres_probe_seconds",
    "postgres_probe_timeout_seconds",
    "webhooks_timeout_seconds",
    "webhooks_lease_seconds",
    "webhooks_first_backoff_seconds",
    "webhooks_max_backoff_seconds",
    "webhooks_log_keep",
    "watch_stall_seconds",
    "denials_keep_days",
    "change_request_ttl_seconds",
)
_NOT_NEGATIVE = (
    "cache_l1_entries",
    "cache_l1_ttl_seconds",
    "consistency_wait_seconds",
    "orphan_grace_seconds",
    "collect_interval_seconds",
    "postgres_restarts",
)


def _check_durations(settings: Settings) -> None:
    for name in _POSITIVE:
        if getattr(settings, name) <= 0:
            raise ConfigError(f"MODELREG_{name.upper()} must be positive")
    for name in _NOT_NEGATIVE:
        if getattr(settings, name) < 0:
            raise ConfigError(f"MODELREG_{name.upper()} must not be negative")


def _check_webhooks(settings: Settings) -> None:
    if settings.webhooks not in ("on", "off"):
        raise ConfigError("MODELREG_WEBHOOKS must be on or off")
    if settings.webhooks_timeout_seconds > settings.webhooks_lease_seconds / 2:
        raise ConfigError(
            "MODELREG_WEBHOOKS_TIMEOUT_SECONDS must be at most half of"
            " MODELREG_WEBHOOKS_LEASE_SECONDS (every delivery must end inside the lease it"
            " was sent under, with a margin for a slow renew or a loaded machine)"
        )


def _check_auth(settings: Settings) -> None:
    if settings.auth not in ("on", "off"):
        raise ConfigError("MODELREG_AUTH must be on or off")
    host = settings.address.rpartition(":")[0].strip("[]")
    if settings.auth == "off" and host not in _LOOPBACK:
        raise ConfigError(
            f"MODELREG_AUTH=off is refused on {settings.address}: without authentication"
            " anyone who reaches the port may change anything, so it is allowed only when"
            " MODELREG_ADDRESS binds to loopback (127.0.0.1, ::1 or localhost)"
        )


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _check_tls(settings: Settings) -> None:
    cert, key, client_ca = (
        settings.tls_cert_file,
        settings.tls_key_file,
        settings.tls_client_ca_file,
    )
    if bool(cert) != bool(key):
        raise ConfigError(
            "MODELREG_TLS_CERT_FILE and MODELREG_TLS_KEY_FILE must be set together (the"
            " listener's certificate and its private key), or neither"
        )
    if client_ca and not cert:
        raise ConfigError(
            "MODELREG_TLS_CLIENT_CA_FILE needs MODELREG_TLS_CERT_FILE and MODELREG_TLS_KEY_FILE:"
            " client certificates are checked only on a TLS listener"
        )
    if not cert or not key:
        return
    cert_pem = read_pem("tls_cert_file", cert)
    key_pem = read_pem("tls_key_file", key)
    _check_key_pair(cert_pem, key_pem)
    if client_ca:
        _load_certificates("tls_client_ca_file", read_pem("tls_client_ca_file", client_ca))


def read_pem(name: str, path: str) -> bytes:
    """The bytes of the PEM file the setting `name` names, or ConfigError naming it."""
    variable = f"MODELREG_{name.upper()}"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from exc
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{variable}: {path} holds no PEM block")
    return data


def _load_certificates(name: str, pem: bytes) -> list[Any]:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigError(f"MODELREG_{name.upper()} holds no readable certificate") from exc


def _check_key_pair(cert_pem: bytes, key_pem: bytes) -> None:
    """The key must be the certificate's: grpc would otherwise fail at bind, obscurely."""
    from cryptography.hazmat.primitives import serialization

    leaf = _load_certificates("tls_cert_file", cert_pem)[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            "MODELREG_TLS_KEY_FILE holds no readable unencrypted private key"
        ) from exc
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != leaf.public_key().public_bytes(der, public):
        raise ConfigError(
            "MODELREG_TLS_KEY_FILE is not the private key of the certificate in"
            " MODELREG_TLS_CERT_FILE"
        )


def _check_oidc(settings: Settings) -> None:
    given = ("oidc_audience", "oidc_jwks_url", "oidc_jwks_file", "oidc_jwks_ca_file")
    if not settings.oidc_issuer:
        stray = [n for n in given if getattr(settings, n)]
        if stray:
            raise ConfigError(
                f"MODELREG_{stray[0].upper()} is set but MODELREG_OIDC_ISSUER is not: JWT"
                " bearer tokens are accepted only from a configured issuer"
            )
        return
    if not settings.oidc_audience:
        raise ConfigError(
            "MODELREG_OIDC_AUDIENCE must be set with MODELREG_OIDC_ISSUER (the `aud` tokens"
            " for this registry carry)"
        )
    if bool(settings.oidc_jwks_url) == bool(settings.oidc_jwks_file):
        raise ConfigError(
            "set exactly one of MODELREG_OIDC_JWKS_URL and MODELREG_OIDC_JWKS_FILE with"
            " MODELREG_OIDC_ISSUER (where the issuer's signing keys are)"
        )
    _check_jwks_location(settings)
    for name in ("oidc_principal_claim", "oidc_groups_claim", "oidc_principal_prefix"):
        if not _PRINTABLE.fullmatch(getattr(settings, name)):
            raise ConfigError(f"MODELREG_{name.upper()} must be printable ASCII, no space")
    if not 0 <= settings.oidc_leeway_seconds <= 300:
        raise ConfigError("MODELREG_OIDC_LEEWAY_SECONDS must be between 0 and 300")
    if settings.oidc_jwks_min_refresh_seconds <= 0 or settings.oidc_token_cache_entries < 0:
        raise ConfigError(
            "MODELREG_OIDC_JWKS_MIN_REFRESH_SECONDS must be positive and"
            " MODELREG_OIDC_TOKEN_CACHE_ENTRIES not negative"
        )
    if settings.oidc_jwks_refresh_seconds < settings.oidc_jwks_min_refresh_seconds:
        raise ConfigError(
            "MODELREG_OIDC_JWKS_REFRESH_SECONDS must be at least"
            " MODELREG_OIDC_JWKS_MIN_REFRESH_SECONDS"
        )


def _check_jwks_location(settings: Settings) -> None:
    url = settings.oidc_jwks_url
    if url:
        parts = urlsplit(url)
        loopback = (parts.hostname or "") in _LOOPBACK
        if not parts.hostname or not (
            parts.scheme == "https" or (parts.scheme == "http" and loopback)
        ):
            raise ConfigError(
                "MODELREG_OIDC_JWKS_URL must be an https:// URL (http:// only on loopback:"
                " keys fetched in the clear could be replaced on the way)"
            )
    if settings.oidc_jwks_file:
        try:
            Path(settings.oidc_jwks_file).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"MODELREG_OIDC_JWKS_FILE: cannot read {settings.oidc_jwks_file}: {exc.strerror}"
            ) from exc
    if settings.oidc_jwks_ca_file:
        if not url:
            raise ConfigError("MODELREG_OIDC_JWKS_CA_FILE is only for MODELREG_OIDC_JWKS_URL")
        _load_certificates(
            "oidc_jwks_ca_file", read_pem("oidc_jwks_ca_file", settings.oidc_jwks_ca_file)
        )


_PRINTABLE = re.compile(r"[!-~]{1,256}")


def _check_blob_url(url: str | None) -> None:
    if url and not url.startswith(("file://", "s3://")):
        raise ConfigError("MODELREG_BLOB_URL must start with file:// or s3://")
    if url and url.startswith("s3://") and not url.removeprefix("s3://").strip("/"):
        raise ConfigError("MODELREG_BLOB_URL must name a bucket: s3://bucket/prefix")


def _parse(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}.get(name, "str")
    kind = {"Path": Path, "int": int, "float": float}.get(str(kind), str)
    try:
        return kind(raw)
    except ValueError as exc:
        raise ConfigError(
            f"MODELREG_{name.upper()} must be a {kind.__name__}, got {raw!r}"
        ) from exc
