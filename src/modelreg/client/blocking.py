"""`Client`: the blocking SDK on a sync gRPC channel.

`push` and `pull` are the AsyncClient's, run to completion in a private event loop on
a private channel (in this thread, or in a helper thread if this one already runs a
loop): streaming, resuming and bounded concurrency are written once, in asyncio.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import grpc

from modelreg.client import access, approvals, artifacts, audit, calls, identity, versions, webhooks
from modelreg.client import lineage as lineage_calls
from modelreg.client.aio import AsyncClient
from modelreg.client.calls import (
    ACCESS,
    APPROVALS,
    ARTIFACTS,
    AUDIT,
    IDENTITY,
    LINEAGE,
    REGISTRY,
    WEBHOOKS,
    Call,
    Pages,
)
from modelreg.client.errors import error_from_rpc
from modelreg.client.live import BlockingLiveCache
from modelreg.client.settings import Settings, Tokens
from modelreg.client.tls import TlsOption, sync_channel
from modelreg.client.watch import Resumption, watch_blocking
from modelreg.v1 import (
    access_service_pb2_grpc,
    approval_service_pb2_grpc,
    artifact_service_pb2_grpc,
    audit_service_pb2_grpc,
    identity_service_pb2_grpc,
    lineage_service_pb2_grpc,
    registry_service_pb2_grpc,
    webhook_service_pb2_grpc,
)
from modelreg.v1 import watch_service_pb2 as ws

T = TypeVar("T")
P = ParamSpec("P")


def _blocking(build: Callable[P, Call[T]]) -> Callable[Concatenate[Client, P], T]:
    @functools.wraps(build)
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(build(*args, **kwargs))

    return method


def _blocking_pages(build: Callable[P, Pages[T]]) -> Callable[Concatenate[Client, P], Iterator[T]]:
    @functools.wraps(build)
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._iterate(build(*args, **kwargs))

    return method


def _in_private_loop(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Client, P], T]:
    @functools.wraps(method)
    def blocking(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        async def run() -> T:
            async with self._async_twin() as twin:
                return await method(twin, *args, **kwargs)

        return _complete(run)

    return blocking


def _complete(run: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end: here, or in a helper thread if a loop runs here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run())
    with ThreadPoolExecutor(1, thread_name_prefix="modelreg-transfer") as helper:
        return helper.submit(lambda: asyncio.run(run())).result()


class Client(Settings):
    """Blocking client; every unary method also takes `timeout=` to override the default.
    Calls carry `token` (an API key; default MODELREG_TOKEN, else the local server's
    `<MODELREG_HOME>/admin.key` if readable) as `authorization: Bearer`. `push` and
    `pull` call their `progress` callback from the thread that runs them."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        actor: str | None = None,
        timeout: float = 10.0,
        retries: int = 4,
        read_your_writes: bool = True,
        tokens: Tokens | None = None,
        tls: TlsOption = None,
    ) -> None:
        super().__init__(
            actor=actor,
            token=token,
            timeout=timeout,
            retries=retries,
            read_your_writes=read_your_writes,
            tokens=tokens,
        )
        self.target = target
        self.tls = tls  # see client/tls.py: None = from MODELREG_TLS_* variables
        self._channel = sync_channel(target, tls)
        self._stubs: dict[str, Any] = {
            REGISTRY: registry_service_pb2_grpc.RegistryServiceStub(self._channel),
            ARTIFACTS: artifact_service_pb2_grpc.ArtifactServiceStub(self._channel),
            WEBHOOKS: webhook_service_pb2_grpc.WebhookServiceStub(self._channel),
            AUDIT: audit_service_pb2_grpc.AuditServiceStub(self._channel),
            APPROVALS: approval_service_pb2_grpc.ApprovalServiceStub(self._channel),
            ACCESS: access_service_pb2_grpc.AccessServiceStub(self._channel),
            IDENTITY: identity_service_pb2_grpc.IdentityServiceStub(self._channel),
            LINEAGE: lineage_service_pb2_grpc.LineageServiceStub(self._channel),
        }

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _async_twin(self) -> AsyncClient:
        return AsyncClient(  # shares the token: a push's writes are this client's
            self.target,
            token=self._token,
            actor=self._actor,
            timeout=self._timeout,
            retries=self._retries,
            tokens=self._tokens,
            tls=self.tls,
        )

    def live(
        self,
        *,
        references: Iterable[str] = (),
        models: Iterable[str] = (),
        bookmark_interval: float = 1.0,
    ) -> BlockingLiveCache:
        """A live cache of `references` (or every alias and `latest` of `models`), followed
        on a background thread; `resolve()` answers from memory. Use `with`."""
        return BlockingLiveCache(
            self._async_twin,
            references=list(references),
            models=list(models),
            bookmark_interval=bookmark_interval,
        )

    def watch(
        self,
        *,
        namespaces: Sequence[str] = (),
        models: Sequence[str] = (),
        aliases: Sequence[str] = (),
        kinds: Sequence[str] = (),
        after_revision: int | None = None,
        from_oldest: bool = False,
        bookmarks: bool = False,
        bookmark_interval: float | None = None,
    ) -> Generator[ws.WatchResponse, None, None]:
        """Follow the change log: each committed transaction's events that match (any of
        the namespaces `ns`, models `ns/model`, aliases `ns/model@alias`; all empty:
        everything; `kinds` such as `alias.set` narrow it), as `WatchResponse`s in
        revision order, each revision once. Starts after `after_revision`, at the oldest
        kept change (`from_oldest`), or now; reconnects and resumes by itself after any
        cut (see modelreg.client.watch). `bookmarks` also yields the server's bookmarks
        (no events, a higher revision: every match up to it was yielded), sent after
        `bookmark_interval` seconds of quiet (server default 5). Runs until the caller
        stops iterating."""
        resumption = Resumption(
            namespaces=namespaces,
            models=models,
            aliases=aliases,
            kinds=kinds,
            after_revision=after_revision,
            from_oldest=from_oldest,
            bookmarks=bookmarks,
            bookmark_interval=bookmark_interval,
        )
        return watch_blocking(self, resumption)

    def _run(self, call: Call[T]) -> T:
        attempts = self._attempts(call)
        rpc = getattr(self._stubs[call.service], call.method)
        self._tokens.stamp(call.request)
        while True:
            try:
                reply = rpc(call.request, timeout=attempts.remaining(), metadata=self._metadata)
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                delay = attempts.next_delay(error.code, error.reason)
                if delay is None:
                    raise error from exc
                time.sleep(delay)
            else:
                self._tokens.read(reply)
                return call.unwrap(reply)

    def _iterate(self, pages: Pages[T]) -> Iterator[T]:
        token = ""
        while True:
            reply = self._run(pages.call(token))
            yield from pages.items(reply)
            token = reply.next_page_token
            if not token:
                return

    push = _in_private_loop(AsyncClient.push)
    push_report = _in_private_loop(AsyncClient.push_report)
    pull = _in_private_loop(AsyncClient.pull)
    create_namespace = _blocking(calls.create_namespace)
    get_namespace = _blocking(calls.get_namespace)
    list_namespaces = _blocking_pages(calls.list_namespaces)
    create_model = _blocking(calls.create_model)
    get_model = _blocking(calls.get_model)
    list_models = _blocking_pages(calls.list_models)
    update_model = _blocking(calls.update_model)
    delete_model = _blocking(calls.delete_model)
    undelete_model = _blocking(calls.undelete_model)
    create_version = _blocking(versions.create_version)
    import_version = _blocking(versions.import_version)
    get_version = _blocking(versions.get_version)
    list_versions = _blocking_pages(versions.list_versions)
    search_versions = _blocking_pages(versions.search_versions)
    add_lineage = _blocking(lineage_calls.add_lineage)
    lineage = _blocking_pages(lineage_calls.lineage)
    update_version = _blocking(versions.update_version)
    archive_version = _blocking(versions.archive_version)
    restore_version = _blocking(versions.restore_version)
    set_alias = _blocking(versions.set_alias)
    delete_alias = _blocking(versions.delete_alias)
    list_aliases = _blocking(versions.list_aliases)
    alias_history = _blocking_pages(versions.alias_history)
    rollback_alias = _blocking(versions.rollback_alias)
    resolve = _blocking(versions.resolve)
    batch_get = _blocking(versions.batch_get)
    list_manifest = _blocking(artifacts.list_manifest)
    finalize_version = _blocking(artifacts.finalize_version)
    fail_version = _blocking(artifacts.fail_version)
    find_missing_blobs = _blocking(artifacts.find_missing_blobs)
    create_webhook = _blocking(webhooks.create_webhook)
    get_webhook = _blocking(webhooks.get_webhook)
    list_webhooks = _blocking_pages(webhooks.list_webhooks)
    delete_webhook = _blocking(webhooks.delete_webhook)
    list_deliveries = _blocking_pages(webhooks.list_deliveries)
    redeliver = _blocking(webhooks.redeliver)

    list_events = _blocking_pages(audit.list_events)
    list_denials = _blocking_pages(audit.list_denials)
    verify_audit_log = _blocking(audit.verify_audit_log)
    set_alias_policy = _blocking(approvals.set_alias_policy)
    get_alias_policy = _blocking(approvals.get_alias_policy)
    request_alias_move = _blocking(approvals.request_alias_move)
    approve = _blocking(approvals.approve)
    reject = _blocking(approvals.reject)
    list_change_requests = _blocking(approvals.list_change_requests)
    grant = _blocking(access.grant)
    revoke = _blocking(access.revoke)
    list_bindings = _blocking_pages(access.list_bindings)
    explain_access = _blocking(access.explain)
    whoami = _blocking(identity.whoami)
    create_api_key = _blocking(identity.create_api_key)
    list_api_keys = _blocking_pages(identity.list_api_keys)
    revoke_api_key = _blocking(identity.revoke_api_key)
