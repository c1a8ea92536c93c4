"""The composition root: the only place that builds pools, servers and services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import ssl
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aioboto3
import aiohttp
import asyncpg
import grpc
import redis.asyncio as redis
from aiobotocore.config import AioConfig
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from modelreg import tracing
from modelreg.api.access import AccessServicer, add_access_service
from modelreg.api.admin import AdminServicer
from modelreg.api.approvals import ApprovalServicer, add_approval_service
from modelreg.api.artifacts import ArtifactServicer, add_artifact_service
from modelreg.api.audit import AuditServicer, add_audit_service
from modelreg.api.authentication import (
    ApiKeyCredentials,
    CredentialChain,
)
from modelreg.api.authorization import AuthorizingGate
from modelreg.api.certificates import CertificateCredentials
from modelreg.api.encoder import ProtoEncoder
from modelreg.api.identity import Authenticator, Credentials, Gate, OpenGate
from modelreg.api.interceptors import ErrorInterceptor
from modelreg.api.jwks import FileJwksSource, HttpJwksSource, JwksKeys, JwksSource
from modelreg.api.keys import IdentityServicer, add_identity_service
from modelreg.api.lineage import LineageServicer, add_lineage_service
from modelreg.api.oidc import JwtCredentials, TokenRules
from modelreg.api.registry import RegistryServicer, add_registry_service
from modelreg.api.watch import WatchServicer
from modelreg.api.webhooks import WebhookServicer, add_webhook_service
from modelreg.blobs.fs import FilesystemBlobStore
from modelreg.blobs.s3 import S3BlobStore
from modelreg.cache.following import CacheApplier
from modelreg.cache.local import LocalCache
from modelreg.cache.remote import RedisCache
from modelreg.cache.stats import CacheStats
from modelreg.cache.tiered import CacheInvalidator, TieredLookups
from modelreg.config import ConfigError, Settings, read_pem
from modelreg.domain.accesscontrol import AccessControl
from modelreg.domain.approvals import Approvals
from modelreg.domain.artifacts import Artifacts
from modelreg.domain.audit import Audit
from modelreg.domain.changelog import Follower
from modelreg.domain.consistency import Consistency
from modelreg.domain.delivery import DeliverySettings, Visible, WebhookDispatcher
from modelreg.domain.grants import GrantCache
from modelreg.domain.identity import (
    HASH_KEY_NAME,
    ApiKeys,
    KeyCache,
    KeyCacheApplier,
    KeyHasher,
    Secret,
)
from modelreg.domain.leases import SystemClock
from modelreg.domain.lineage import Lineage
from modelreg.domain.paging import PageTokens
from modelreg.domain.ports import BlobStore, Clock
from modelreg.domain.principals import DenialLog
from modelreg.domain.registry import Registry
from modelreg.domain.uploads import Uploads
from modelreg.domain.watch import ChangeHub
from modelreg.domain.webhooks import Webhooks
from modelreg.embedded import EmbeddedPostgres, start_postgres
from modelreg.health import DatabaseMonitor, PostgresProbe, QuietWhileUnreachable
from modelreg.metrics import Exporter, Recorder, publish, serve_metrics
from modelreg.store.access import PostgresAccessStore
from modelreg.store.audit import PostgresAuditStore, PostgresDenialLog
from modelreg.store.changelog import PostgresChangeLog
from modelreg.store.identity import PostgresApiKeyStore
from modelreg.store.lineage import PostgresLineageStore
from modelreg.store.listener import PostgresChangeListener
from modelreg.store.migrate import migrate
from modelreg.store.postgres import PostgresReplicaHead, PostgresStore, create_pool
from modelreg.store.secrets import shared_secret
from modelreg.store.webhooks import (
    KEY_NAME,
    PostgresDeliveryStore,
    PostgresWebhookStore,
    SecretBox,
)
from modelreg.v1 import (
    access_service_pb2,
    admin_service_pb2,
    admin_service_pb2_grpc,
    approval_service_pb2,
    artifact_service_pb2,
    audit_service_pb2,
    identity_service_pb2,
    lineage_service_pb2,
    registry_service_pb2,
    watch_service_pb2,
    watch_service_pb2_grpc,
    webhook_service_pb2,
)
from modelreg.webhooks.http import AiohttpWebhookSender, client_session

log = logging.getLogger(__name__)
DENIALS_SWEEP_SECONDS = 3600.0  # how often each process deletes expired denials (jittered)

SERVICE_NAMES = (
    registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
    artifact_service_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
    webhook_service_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
    watch_service_pb2.DESCRIPTOR.services_by_name["WatchService"].full_name,
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    approval_service_pb2.DESCRIPTOR.services_by_name["ApprovalService"].full_name,
    access_service_pb2.DESCRIPTOR.services_by_name["AccessService"].full_name,
    identity_service_pb2.DESCRIPTOR.services_by_name["IdentityService"].full_name,
    lineage_service_pb2.DESCRIPTOR.services_by_name["LineageService"].full_name,
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
)
# The statuses that follow the database: every service but AdminService (stats of this
# process) answers from it.
_OWN_SERVICES = tuple(n for n in SERVICE_NAMES if n.startswith("modelreg."))
HEALTH_NAMES = ("", *(name for name in _OWN_SERVICES if not name.endswith(".AdminService")))
# SERVING while the process serves, whatever the database does: what a liveness probe
# asks (a database outage must move traffic away, not restart every pod)
LIVENESS = "liveness"
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Keep messages small and streams chunked instead of raising the limit (DESIGN.md §5).
SERVER_OPTIONS = [
    ("grpc.so_reuseport", 1),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    # Ping a connection idle for a minute; one unanswered for 20 s is closed, so calls of
    # a client that vanished (a half-open connection) end instead of waiting for hours.
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
]


@dataclass
class RunningServer:
    """A started server: its bound port and the handles shutdown needs."""

    server: grpc.aio.Server
    health: Any  # grpc_health.v1.health.aio.HealthServicer (the stubs lack .aio)
    port: int
    services: Services
    recorder: Recorder | None = None  # its metrics, with MODELREG_METRICS_ADDRESS
    metrics_port: int = 0  # where this process serves them (0: not here, or off)

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, stop accepting calls, let in-flight calls finish for `grace` s."""
        await self.health.enter_graceful_shutdown()
        if self.services.watch is not None:
            await self.services.watch.close()  # Watch streams never end on their own
        await self.server.stop(grace)


@dataclass(frozen=True)
class Database:
    """The PostgreSQL this process uses, and where it came from (for the logs)."""

    url: str
    origin: str
    embedded: EmbeddedPostgres | None = None  # set in the process that runs it

    def for_workers(self) -> Database:
        """What a worker process is told: the same server, run by its supervisor."""
        if self.embedded is None:
            return self
        origin = f"embedded, data in {self.embedded.data_dir}, run by the supervisor"
        return Database(self.url, f"{origin} (pid {os.getpid()})")


async def open_database(settings: Settings, stack: AsyncExitStack) -> Database:
    """The configured PostgreSQL, or the embedded one in MODELREG_HOME (started here)."""
    if settings.postgres_url:
        origin = f"{_without_password(settings.postgres_url)} (MODELREG_POSTGRES_URL)"
        log.info("postgres: %s", origin)
        return Database(settings.postgres_url, origin)
    data_dir = settings.home / "postgres"
    origin = f"embedded, data in {data_dir}"
    log.info("postgres: %s (set MODELREG_POSTGRES_URL to use a server)", origin)
    embedded = await asyncio.to_thread(start_postgres, data_dir, adopt=True)
    stack.callback(embedded.stop)
    return Database(embedded.url, origin, embedded)


async def apply_migrations(url: str) -> list[str]:
    """Bring the schema up to date (safe while other processes do the same)."""
    conn = await asyncpg.connect(url)
    try:
        applied = await migrate(conn)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise ConfigError(
            "MODELREG_POSTGRES_URL: its role may not apply the pending migrations"
            f" ({exc}); run `modelreg migrate` with the owner's URL first, then"
            " `SELECT modelreg_grant_runtime('<runtime role>')` (docs/architecture.md,"
            ' "Audit log")'
        ) from exc
    finally:
        await conn.close()
    log.info("migrations: %s", ", ".join(applied) if applied else "schema up to date")
    return applied


@dataclass
class Services:
    """What the servicers are built on."""

    registry: Registry
    stats: CacheStats
    local: LocalCache | None
    remote: RedisCache | None
    artifacts: Artifacts
    uploads: Uploads
    store: PostgresStore
    blobs: BlobStore
    pool: asyncpg.Pool  # the primary's, which health watches
    read_pool: asyncpg.Pool | None = None  # MODELREG_POSTGRES_READ_URL's
    changes: Follower | None = None  # this process's L1 following the change log
    change_log: PostgresChangeLog | None = None
    listener: PostgresChangeListener | None = None  # the process's one LISTEN connection
    lineage: Lineage | None = None
    consistency: Consistency | None = None  # consistency tokens: mutations' and lookups'
    webhooks: Webhooks | None = None
    keys: ApiKeys | None = None  # API keys: IdentityService and their verification
    dispatcher: WebhookDispatcher | None = None  # None with MODELREG_WEBHOOKS=off
    watch: ChangeHub | None = None  # what this process's Watch streams follow
    audit: Audit | None = None  # AuditService's use cases
    denials: PostgresDenialLog | None = None  # where refused calls are recorded
    grants: GrantCache | None = None  # every role binding, following the change log
    access: AccessControl | None = None
    grants_follower: Follower | None = None


async def build_services(
    settings: Settings, stack: AsyncExitStack, database: Database, *, authorizing: bool = False
) -> Services:
    """Migrations, pools, caches, store: the registry's use cases ready to serve
    (`authorizing`: webhooks deliver only what their creator may read)."""
    url = database.url
    await apply_migrations(url)
    pool = await create_pool(url, max_size=settings.postgres_pool_size)
    stack.push_async_callback(pool.close)
    read_pool = None
    if settings.postgres_read_url:
        read_pool = await create_pool(
            settings.postgres_read_url, max_size=settings.postgres_pool_size
        )
        stack.push_async_callback(read_pool.close)
    replica = PostgresReplicaHead(read_pool) if read_pool is not None else None
    stats = CacheStats()
    local = _local_cache(settings)
    remote = await _redis_cache(settings, stack, local, stats)
    invalidator = CacheInvalidator(local=local, remote=remote, stats=stats)
    store = PostgresStore(pool, read_pool, on_commit=invalidator, count=stats.add)
    encoder = ProtoEncoder()
    cached = None
    if local is not None or remote is not None:
        cached = TieredLookups(
            store=store,
            encoder=encoder,
            local=local,
            remote=remote,
            stats=stats,
            followed=lambda: services.changes.revision if services.changes else -1,
            replica=replica,
        )
    blobs = await _blob_store(settings, stack)
    artifacts = Artifacts(store=store, blobs=blobs)
    uploads = Uploads(
        store=store, leases=store, blobs=blobs, lease_seconds=settings.upload_lease_seconds
    )
    _collect_orphans(settings, artifacts, stack)
    tokens = PageTokens(await shared_secret(pool, name="page_token"))
    registry = Registry.on(store, encoder=encoder, cached=cached, tokens=tokens, search=store)
    lineage = Lineage(PostgresLineageStore(pool, resolve=store.resolve), tokens=tokens)
    services = Services(registry, stats, local, remote, artifacts, uploads, store, blobs, pool)
    services.read_pool = read_pool
    services.lineage = lineage
    services.change_log = PostgresChangeLog(pool)
    services.listener = await _listen(url, stack)
    services.watch = ChangeHub(
        log=services.change_log,
        subscribe=services.listener.subscribe,
        buffer_events=settings.watch_buffer_events,
        counters=stats,
    )
    stack.push_async_callback(services.watch.close)
    services.grants, services.grants_follower = await _follow_grants(services, stack)
    services.watch.observe = services.grants.observe
    visible = services.grants.creator_may_see if authorizing else None
    services.webhooks, services.dispatcher = await _webhooks(
        settings, services, tokens, stack, visible
    )
    services.audit = Audit(store=PostgresAuditStore(pool), tokens=tokens)
    services.denials = PostgresDenialLog(pool)
    _sweep_denials(settings, services.denials, stack)
    services.keys = await _api_keys(settings, services, tokens, stack)
    # decide the first call on every binding committed before it, the first admin's too
    # (made just now, which the grants' follower may not have read yet)
    await services.grants.reached(
        await services.change_log.head(), wait_seconds=settings.consistency_wait_seconds
    )
    if cached is not None:
        applier = CacheApplier(local=local, remote=remote, stats=stats)
        services.changes = await _follow_changes(
            services.listener, services.change_log, applier, stack
        )
        if remote is not None:
            remote.on_recover = applier.mark
            await applier.mark()
    services.access = AccessControl(
        store=PostgresAccessStore(pool), grants=services.grants, tokens=tokens
    )
    services.consistency = Consistency(
        heads=services.change_log,
        follower=services.changes,
        replica=replica,
        wait_seconds=settings.consistency_wait_seconds,
    )
    return services


ADMIN_KEY_FILE = "admin.key"  # in MODELREG_HOME: the first admin's key, mode 0600


async def _api_keys(
    settings: Settings, services: Services, tokens: PageTokens, stack: AsyncExitStack
) -> ApiKeys:
    """API keys, their cache following the change log (a revocation anywhere drops the
    key here), and the first admin of a fresh deployment."""
    hasher = KeyHasher(await shared_secret(services.pool, name=HASH_KEY_NAME))
    cache = KeyCache()
    keys = ApiKeys(
        store=PostgresApiKeyStore(services.pool), hasher=hasher, tokens=tokens, cache=cache
    )
    assert services.change_log is not None
    assert services.listener is not None
    stats = services.stats

    def applied(revision: int) -> None:
        stats["identity.keys.revision"] = revision  # how far this process follows revocations

    follower = Follower(
        log=services.change_log,
        apply=KeyCacheApplier(cache, on_applied=applied),
        name="keys",
        outlives_failures=True,
    )
    stack.callback(services.listener.subscribe(follower.wake))
    await follower.start()
    applied(follower.revision)
    _background(follower.run(), "changelog-keys", stack)
    await _first_admin(settings, keys)
    return keys


async def _first_admin(settings: Settings, keys: ApiKeys) -> None:
    """On a deployment without principals, make `admin` and write its key where the local
    CLI and SDK find it; every process may try, one succeeds (see create_first_admin)."""
    path = settings.home / ADMIN_KEY_FILE
    if await keys.create_first_admin(lambda key: write_key_file(path, key)):
        log.warning("auth: created principal admin; its key is in %s (this user only)", path)
    elif path.exists():
        log.info("auth: the local admin key is at %s", path)
    else:
        log.info(
            "auth: this deployment has principals already; to call it, an admin creates you"
            " a key with `modelreg keys create NAME` (then set MODELREG_TOKEN)"
        )


def write_key_file(path: Path, key: Secret) -> None:
    """Write `key` to `path`, readable by this user only from the first byte (a new file
    made 0600 with O_EXCL, then renamed over any stale one from an earlier database)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, f"{key.reveal()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


async def _gate(
    settings: Settings,
    services: Services,
    stack: AsyncExitStack,
    authenticator: Authenticator | None = None,
    denials: DenialLog | None = None,
) -> Gate:
    """MODELREG_AUTH=on (or an `authenticator` given): every call but health and
    reflection proves who it is (an API key, a JWT bearer token, a client certificate:
    the first the call carries), and is authorized by the permission table against the
    caller's role bindings. MODELREG_AUTH=off: everyone is admitted as who it says."""
    if authenticator is None and settings.auth == "off":
        log.warning(
            "auth: OFF (MODELREG_AUTH=off): every caller is admitted as the name it declares;"
            " allowed only on loopback (%s)",
            settings.address,
        )
        return OpenGate()
    if authenticator is None:
        assert services.keys is not None
        # bearer credentials first: a call that sends one means it, even over mTLS
        sources = [ApiKeyCredentials(services.keys), *await transport_credentials(settings, stack)]
        authenticator = CredentialChain(sources, key_file=str(settings.home / ADMIN_KEY_FILE))
    assert services.grants is not None
    return AuthorizingGate(
        authenticator,
        services.grants,
        denials=denials or services.denials,
        # a token above the grants' position waits for them (then UNAVAILABLE, never a
        # decision on bindings older than the token)
        wait_seconds=max(settings.consistency_wait_seconds, 1.0),
    )


async def _listen(url: str, stack: AsyncExitStack) -> PostgresChangeListener:
    """The process's one LISTEN connection, which wakes every follower of the change log."""
    listener = PostgresChangeListener(url)
    await listener.connect()  # listen first: nothing commits unheard after a head is read
    stack.push_async_callback(listener.close)
    _background(listener.run(), "changelog-listener", stack)
    return listener


def _background(loop: Coroutine[Any, Any, None], name: str, stack: AsyncExitStack) -> None:
    task = asyncio.create_task(loop, name=name)
    task.add_done_callback(_log_failure)
    stack.push_async_callback(_cancel_and_wait, task)


async def _follow_changes(
    listener: PostgresChangeListener,
    change_log: PostgresChangeLog,
    applier: CacheApplier,
    stack: AsyncExitStack,
) -> Follower:
    """This process's caches follow the change log."""
    follower = Follower(log=change_log, apply=applier, name="L1", outlives_failures=True)
    stack.callback(listener.subscribe(follower.wake))
    await follower.start()
    applier.begin(follower.revision)
    _background(follower.run(), "changelog-l1", stack)
    log.info("cache: L1 follows the change log from revision %d", follower.revision)
    return follower


async def _follow_grants(services: Services, stack: AsyncExitStack) -> tuple[GrantCache, Follower]:
    """Every role binding in memory, kept so by following the change log (domain/grants.py).
    The follower reads its start before the bindings load, so nothing commits unseen."""
    assert services.listener is not None
    assert services.change_log is not None
    grants = GrantCache(source=PostgresAccessStore(services.pool))
    follower = Follower(
        log=services.change_log, apply=grants, name="grants", outlives_failures=True
    )
    stack.callback(services.listener.subscribe(follower.wake))
    await follower.start()
    await grants.load()
    _background(follower.run(), "changelog-grants", stack)
    return grants, follower


async def _webhooks(
    settings: Settings,
    services: Services,
    tokens: PageTokens,
    stack: AsyncExitStack,
    visible: Visible | None,
) -> tuple[Webhooks, WebhookDispatcher | None]:
    """WebhookService's use cases, and (unless MODELREG_WEBHOOKS=off) this process's
    dispatcher, woken by the change listener; leases share the subscriptions out."""
    box = SecretBox(await shared_secret(services.pool, name=KEY_NAME))
    store = PostgresWebhookStore(services.pool, box, services.store)
    if settings.webhooks == "off" or services.change_log is None or services.listener is None:
        log.info("webhooks: this process does not deliver (MODELREG_WEBHOOKS=off)")
        return Webhooks(store=store, tokens=tokens), None
    session = await stack.enter_async_context(client_session())
    sender = AiohttpWebhookSender(session, timeout_seconds=settings.webhooks_timeout_seconds)
    delivery = DeliverySettings(
        lease_seconds=settings.webhooks_lease_seconds,
        first_backoff_seconds=settings.webhooks_first_backoff_seconds,
        max_backoff_seconds=settings.webhooks_max_backoff_seconds,
        log_keep=settings.webhooks_log_keep,
    )
    dispatcher = WebhookDispatcher(
        store=PostgresDeliveryStore(services.pool, box),
        log=services.change_log,
        sender=sender,
        clock=SystemClock(),
        settings=delivery,
        owner=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}",
        visible=visible,
        observe=services.grants.observe if services.grants is not None else None,
    )
    stack.callback(services.listener.subscribe(dispatcher.wake))
    _background(dispatcher.run(), "webhooks", stack)
    return Webhooks(store=store, tokens=tokens, on_changed=dispatcher.poke), dispatcher


async def _blob_store(settings: Settings, stack: AsyncExitStack) -> BlobStore:
    """The filesystem under MODELREG_HOME, another directory, or an S3 bucket."""
    url = urlsplit(settings.blob_url or (settings.home / "blobs").as_uri())
    if url.scheme == "file":
        log.info("blobs: filesystem at %s", url.path)
        return FilesystemBlobStore(Path(url.path), mapped_reads=settings.blob_read == "mmap")
    endpoint = settings.s3_endpoint_url
    config = AioConfig(max_pool_connections=64)  # several uploads, each with parts in flight
    client = await stack.enter_async_context(
        aioboto3.Session().client("s3", endpoint_url=endpoint, config=config)
    )
    log.info("blobs: s3://%s%s (endpoint %s)", url.netloc, url.path, endpoint or "AWS")
    return S3BlobStore(client, bucket=url.netloc, prefix=url.path.strip("/"))


def _collect_orphans(settings: Settings, artifacts: Artifacts, stack: AsyncExitStack) -> None:
    """Every process sweeps now and then; per-blob locks make concurrent sweeps safe."""
    interval = settings.collect_interval_seconds
    if not interval:
        log.info("blobs: orphan collection off (MODELREG_COLLECT_INTERVAL_SECONDS=0)")
        return
    sweep = _collect_forever(artifacts, interval, settings.orphan_grace_seconds)
    task = asyncio.create_task(sweep, name="collect-orphans")
    stack.push_async_callback(_cancel_and_wait, task)


async def _collect_forever(artifacts: Artifacts, interval: float, grace: float) -> None:
    """Collect every `interval` seconds (jittered, so replicas spread out); a failed
    round is logged and the next one tries again."""
    while True:
        await asyncio.sleep(interval * random.uniform(0.8, 1.2))
        try:
            collected = await artifacts.collect_orphans(grace_seconds=grace)
        except Exception:  # a background loop: log it, never die of it
            log.exception("orphan collection failed; next try in about %.0f s", interval)
            continue
        if collected:
            log.info("collected %d orphaned blobs", len(collected))


def _sweep_denials(settings: Settings, denials: PostgresDenialLog, stack: AsyncExitStack) -> None:
    """Every process deletes denials older than MODELREG_DENIALS_KEEP_DAYS now and then
    (a plain DELETE: concurrent sweeps only find less to do)."""

    keep = settings.denials_keep_days

    async def sweep_forever() -> None:
        while True:
            try:
                deleted = await denials.sweep(keep_days=keep)
            except Exception:  # a background loop: log it, never die of it
                log.exception("denials: the sweep failed; next try in about an hour")
            else:
                if deleted:
                    log.info("denials: deleted %d older than %g days", deleted, keep)
            await asyncio.sleep(DENIALS_SWEEP_SECONDS * random.uniform(0.8, 1.2))

    _background(sweep_forever(), "denials-sweep", stack)


def _log_failure(task: asyncio.Task[None]) -> None:
    """A background loop that ends on its own is a bug: say so (the L1 TTL still bounds
    how stale the cache can get without its follower)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())


async def _cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Stop a background task and let it unwind (no half-done delete left behind)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _local_cache(settings: Settings) -> LocalCache | None:
    if not settings.cache_l1_entries or not settings.cache_l1_ttl_seconds:
        log.info("cache: L1 off")
        return None
    return LocalCache(
        max_entries=settings.cache_l1_entries,
        max_bytes=settings.cache_l1_bytes,
        ttl=settings.cache_l1_ttl_seconds,
    )


async def _redis_cache(
    settings: Settings, stack: AsyncExitStack, local: LocalCache | None, stats: CacheStats
) -> RedisCache | None:
    if not settings.redis_url:
        log.info("cache: no L2 (set MODELREG_REDIS_URL to share one through Redis)")
        return None
    timeout = settings.redis_timeout_seconds
    no_retry = Retry(NoBackoff(), 0)  # a slow Redis must not slow lookups: fall through instead
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=no_retry
    )
    writer = redis.Redis.from_url(
        settings.redis_url, socket_timeout=1, socket_connect_timeout=1, retry=no_retry
    )
    listener = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, retry=no_retry)
    for each in (client, writer, listener):
        stack.push_async_callback(each.aclose)

    def drop(stale: list[str] | None) -> None:
        if local is None:
            return
        if stale is None:
            local.clear()
        else:
            local.drop(stale)

    remote = RedisCache(
        client,
        writer,
        listener,
        ttl=settings.cache_l2_ttl_seconds,
        negative_ttl=settings.cache_negative_ttl_seconds,
        on_drop=drop,
        count=stats.add,
    )
    await remote.start()
    task = asyncio.create_task(remote.run(), name="redis-cache")
    stack.callback(task.cancel)
    state = "up" if remote.available else "down, retrying in the background"
    log.info("cache: L2 redis %s (MODELREG_REDIS_URL)", state)
    return remote


async def start_server(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    database: Database | None = None,
    authenticator: Authenticator | None = None,
    denials: DenialLog | None = None,
    gate: Gate | None = None,
    metrics_dir: Path | None = None,
) -> RunningServer:
    """Build everything and start serving on settings.address (port 0 picks a free one),
    on `database` if given (one the caller opened). Calls are admitted by `gate` if given
    (tests), else authenticated (by `authenticator` if given, else by the credentials the
    settings configure) and authorized (api/authorization.py), unless MODELREG_AUTH=off.
    With MODELREG_METRICS_ADDRESS the calls are measured and the numbers served there,
    or, in a worker (`metrics_dir`), written for the supervisor to serve."""
    if database is None:
        database = await open_database(settings, stack)
    authorizing = gate is None and (authenticator is not None or settings.auth == "on")
    services = await build_services(settings, stack, database, authorizing=authorizing)
    assert services.consistency is not None  # build_services sets it
    assert services.grants is not None
    if gate is None:
        gate = await _gate(settings, services, stack, authenticator, denials)
    # what servicers check per item (batches, Watch events); None: nothing is checked
    grants = services.grants if isinstance(gate, AuthorizingGate) else None
    recorder = _observed(settings, services, metrics_dir)
    server = grpc.aio.server(
        interceptors=[ErrorInterceptor(gate, recorder, access_log=settings.access_log == "on")],
        options=SERVER_OPTIONS,
    )
    consistency = services.consistency
    add_registry_service(
        RegistryServicer(services.registry, grants=grants), server, consistency=consistency
    )
    assert services.access is not None
    add_access_service(
        AccessServicer(services.access, services.grants), server, consistency=consistency
    )
    remote = services.remote
    changes, change_log = services.changes, services.change_log
    admin = AdminServicer(
        services.stats,
        lambda: remote is not None and remote.available,
        applied_revision=lambda: changes.revision if changes is not None else 0,
        head_revision=change_log.head if change_log is not None else None,
    )
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(admin, server)
    artifacts = ArtifactServicer(services.artifacts, services.uploads)
    add_artifact_service(artifacts, server, consistency=consistency)
    if services.webhooks is not None:
        add_webhook_service(WebhookServicer(services.webhooks), server, consistency=consistency)
    if services.audit is not None:
        add_audit_service(AuditServicer(services.audit), server, consistency=consistency)
    approvals = Approvals(services.store, ttl_seconds=settings.change_request_ttl_seconds)
    add_approval_service(ApprovalServicer(approvals), server, consistency=consistency)
    if services.lineage is not None:
        lineage = LineageServicer(services.lineage, grants)
        add_lineage_service(lineage, server, consistency=consistency)
    if services.watch is not None:
        watch = WatchServicer(
            services.watch, stall_seconds=settings.watch_stall_seconds, grants=grants
        )
        watch_service_pb2_grpc.add_WatchServiceServicer_to_server(watch, server)
    if services.keys is not None:
        identity = IdentityServicer(services.keys)
        add_identity_service(identity, server, consistency=consistency)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(SERVICE_NAMES, server)
    port = bind(server, settings)
    if port == 0:
        raise OSError(f"cannot listen on {settings.address} (MODELREG_ADDRESS / --address)")
    await server.start()
    running = RunningServer(server, health_servicer, port, services, recorder)
    stack.push_async_callback(running.stop, settings.grace_seconds)
    running.metrics_port = _expose_metrics(settings, stack, recorder, metrics_dir)
    for name in (*HEALTH_NAMES, LIVENESS):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    _watch_database(settings, database, services.pool, health_servicer, stack)
    return running


def _observed(settings: Settings, services: Services, metrics_dir: Path | None) -> Recorder | None:
    """Turn tracing on if configured; the recorder of the calls' metrics, if any."""
    if settings.tracing != "off" and not tracing.STATE.enabled:
        tracing.configure(settings.tracing)
    if not settings.metrics_address and metrics_dir is None:
        return None
    return Recorder(services.stats, gauges=_gauges(services))


def _gauges(services: Services) -> Callable[[], dict[str, float]]:
    """What the metrics read of this process at each snapshot (metrics.py)."""
    pools = {"postgres.pool": services.pool}
    if services.read_pool is not None:
        pools["postgres.read_pool"] = services.read_pool

    def read() -> dict[str, float]:
        values: dict[str, float] = {}
        for name, pool in pools.items():
            values[f"{name}.connections"] = pool.get_size()
            values[f"{name}.idle"] = pool.get_idle_size()
        if services.local is not None:
            values["cache.l1.entries"] = services.local.size
        notified = services.listener.notified if services.listener is not None else 0
        if services.watch is not None:
            values["watch.streams"] = services.watch.streams
            if services.watch.running:  # revisions committed that its streams have not had
                values["watch.lag_revisions"] = max(notified - services.watch.revision, 0)
        if services.changes is not None:
            values["changelog.applied.revision"] = services.changes.revision
            values["changelog.lag_revisions"] = max(notified - services.changes.revision, 0)
        if isinstance(services.blobs, FilesystemBlobStore):
            values["blobs.disk_free_bytes"], values["blobs.disk_total_bytes"] = (
                services.blobs.disk()
            )
        return values

    return read


def _expose_metrics(
    settings: Settings, stack: AsyncExitStack, recorder: Recorder | None, directory: Path | None
) -> int:
    """Serve this process's numbers (one process), or publish them to `directory` for the
    supervisor (a worker); the port served on, or 0."""
    if recorder is None:
        return 0
    if directory is not None:
        task = asyncio.ensure_future(publish(recorder, directory))
        stack.push_async_callback(_cancelled, task)
        return 0
    assert settings.metrics_address is not None
    exporter = Exporter(lambda: [recorder.snapshot()])
    stack.callback(serve_metrics(settings.metrics_address, exporter))
    return exporter.port


async def _cancelled(task: asyncio.Future[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def bind(server: grpc.aio.Server, settings: Settings) -> int:
    """Listen on settings.address: with TLS if MODELREG_TLS_CERT_FILE is set, requiring
    client certificates from MODELREG_TLS_CLIENT_CA_FILE if that is set (a client without
    one fails the handshake; the server never sees a call from it). Every worker binds
    the same way; SO_REUSEPORT (SERVER_OPTIONS) shares the port among them."""
    if not settings.tls_cert_file or not settings.tls_key_file:
        return server.add_insecure_port(settings.address)
    chain = read_pem("tls_cert_file", settings.tls_cert_file)
    key = read_pem("tls_key_file", settings.tls_key_file)
    client_ca = None
    if settings.tls_client_ca_file:
        client_ca = read_pem("tls_client_ca_file", settings.tls_client_ca_file)
    credentials = grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
    mode = "mutual TLS" if client_ca is not None else "TLS"
    log.info("listener: %s (MODELREG_TLS_CERT_FILE %s)", mode, settings.tls_cert_file)
    return server.add_secure_port(settings.address, credentials)


async def transport_credentials(
    settings: Settings, stack: AsyncExitStack, *, clock: Clock | None = None
) -> list[Credentials]:
    """The Credentials sources of JWT bearer tokens (with MODELREG_OIDC_ISSUER) and
    client certificates (with MODELREG_TLS_CLIENT_CA_FILE), for the Authenticator to
    compose with API keys."""
    sources: list[Credentials] = []
    if settings.tls_client_ca_file:
        sources.append(CertificateCredentials())
    if settings.oidc_issuer:
        sources.append(await _jwt_credentials(settings, stack, clock or SystemClock()))
    return sources


async def _jwt_credentials(
    settings: Settings, stack: AsyncExitStack, clock: Clock
) -> JwtCredentials:
    assert settings.oidc_issuer  # validated() says so, and that an audience is set
    assert settings.oidc_audience
    source: JwksSource
    if settings.oidc_jwks_file:
        source = FileJwksSource(Path(settings.oidc_jwks_file))
    else:
        assert settings.oidc_jwks_url
        context = ssl.create_default_context(cafile=settings.oidc_jwks_ca_file)
        connector = aiohttp.TCPConnector(ssl=context)
        session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        stack.push_async_callback(session.close)
        source = HttpJwksSource(session, settings.oidc_jwks_url)
    keys = JwksKeys(
        source,
        clock=clock,
        refresh_seconds=settings.oidc_jwks_refresh_seconds,
        min_refresh_seconds=settings.oidc_jwks_min_refresh_seconds,
    )
    stack.push_async_callback(keys.close)
    await keys.refresh()
    if not keys.holds_any and settings.oidc_jwks_file:
        raise ConfigError(f"MODELREG_OIDC_JWKS_FILE: {keys.failure}")
    rules = TokenRules(
        issuer=settings.oidc_issuer,
        audience=settings.oidc_audience,
        principal_claim=settings.oidc_principal_claim,
        groups_claim=settings.oidc_groups_claim,
        prefix=settings.oidc_principal_prefix,
        leeway_seconds=settings.oidc_leeway_seconds,
        cache_entries=settings.oidc_token_cache_entries,
    )
    log.info("oidc: JWT bearer tokens from %s, keys from %s", rules.issuer, source.where)
    return JwtCredentials(rules=rules, keys=keys)


def _watch_database(
    settings: Settings,
    database: Database,
    pool: asyncpg.Pool,
    health_servicer: Any,
    stack: AsyncExitStack,
) -> DatabaseMonitor:
    """Keep health NOT_SERVING while the database does not answer. When it answers
    again, the pool's connections are replaced first: one that has not noticed its
    server went away (a TCP peer that vanished) would fail the next call."""
    probe = PostgresProbe(database.url, timeout=settings.postgres_probe_timeout_seconds)

    async def report(reachable: bool) -> None:
        if reachable:
            await pool.expire_connections()
        status = health_pb2.HealthCheckResponse.SERVING if reachable else _NOT_SERVING
        for name in HEALTH_NAMES:
            await health_servicer.set(name, status)

    monitor = DatabaseMonitor(probe, on_change=report, interval=settings.postgres_probe_seconds)
    probe.when_lost(monitor.wake)
    quiet, pool_log = QuietWhileUnreachable(monitor), logging.getLogger("asyncpg.pool")
    pool_log.addFilter(quiet)
    stack.callback(pool_log.removeFilter, quiet)
    task = asyncio.create_task(monitor.run(), name="database-health")
    stack.push_async_callback(probe.close)
    stack.push_async_callback(_cancel_and_wait, task)
    return monitor


def migrate_main(settings: Settings) -> list[str]:
    """`modelreg migrate`: apply pending migrations and return their names."""

    async def run() -> list[str]:
        async with AsyncExitStack() as stack:
            return await apply_migrations((await open_database(settings, stack)).url)

    return asyncio.run(run())


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host))
