"""`AsyncClient`: the SDK on grpc.aio, and the streaming half of `push` and `pull`."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import grpc

from modelreg.client import access, approvals, artifacts, audit, calls, identity, versions, webhooks
from modelreg.client import lineage as lineage_calls
from modelreg.client.artifacts import Progress, Received, parse_download
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
from modelreg.client.live import LiveCache
from modelreg.client.pull import pull
from modelreg.client.push import CHUNK_SIZE, Pushed, push, push_report
from modelreg.client.settings import Settings, Tokens
from modelreg.client.tls import TlsOption, aio_channel
from modelreg.client.watch import Resumption, watch_async
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
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import resources_pb2 as res
from modelreg.v1 import watch_service_pb2 as ws

T = TypeVar("T")
P = ParamSpec("P")


def _awaitable(
    build: Callable[P, Call[T]],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    @functools.wraps(build)
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(build(*args, **kwargs))

    return method


def _async_pages(
    build: Callable[P, Pages[T]],
) -> Callable[Concatenate[AsyncClient, P], AsyncIterator[T]]:
    @functools.wraps(build)
    def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        return self._iterate(build(*args, **kwargs))

    return method


class AsyncClient(Settings):
    """asyncio client; every unary method also takes `timeout=` to override the default.
    Calls carry `token` (an API key; default MODELREG_TOKEN, else the local server's
    `<MODELREG_HOME>/admin.key` if readable) as `authorization: Bearer`."""

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
        self._channel = aio_channel(target, tls)
        self._artifacts = artifact_service_pb2_grpc.ArtifactServiceStub(self._channel)
        self._stubs: dict[str, Any] = {
            REGISTRY: registry_service_pb2_grpc.RegistryServiceStub(self._channel),
            ARTIFACTS: self._artifacts,
            WEBHOOKS: webhook_service_pb2_grpc.WebhookServiceStub(self._channel),
            AUDIT: audit_service_pb2_grpc.AuditServiceStub(self._channel),
            APPROVALS: approval_service_pb2_grpc.ApprovalServiceStub(self._channel),
            ACCESS: access_service_pb2_grpc.AccessServiceStub(self._channel),
            IDENTITY: identity_service_pb2_grpc.IdentityServiceStub(self._channel),
            LINEAGE: lineage_service_pb2_grpc.LineageServiceStub(self._channel),
        }
        self._download_stream = self._channel.unary_stream(
            "/modelreg.v1.ArtifactService/DownloadFile",
            request_serializer=art.DownloadFileRequest.SerializeToString,
            response_deserializer=parse_download,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel, cancelling calls still in flight."""
        await self._channel.close(grace=None)

    async def push(
        self,
        target: str,
        path: str | os.PathLike[str],
        *,
        finalize: bool = True,
        concurrency: int = 4,
        chunk_size: int = CHUNK_SIZE,
        progress: Progress | None = None,
        fail_on_error: bool = False,
        if_changed: bool = False,
    ) -> res.ModelVersion:
        """Upload a file or a directory (every file below it) as a version's files, skipping
        bytes the registry holds, and finalize it. `target` is `ns/model` (a new version)
        or a PENDING version (`ns/model:7`). Returns the READY version (PENDING if not
        `finalize`). On failure the version stays PENDING (FAILED with `fail_on_error`).
        Identical files make a new, identical version unless `if_changed` (`ns/model`
        only): then the latest READY version is returned if it holds exactly these files
        (same manifest digest); `push_report` tells which happened."""
        return await push(
            self,
            target,
            Path(path),
            finalize=finalize,
            concurrency=concurrency,
            chunk_size=chunk_size,
            progress=progress,
            fail_on_error=fail_on_error,
            if_changed=if_changed,
        )

    async def push_report(
        self,
        target: str,
        path: str | os.PathLike[str],
        *,
        finalize: bool = True,
        concurrency: int = 4,
        chunk_size: int = CHUNK_SIZE,
        progress: Progress | None = None,
        fail_on_error: bool = False,
        if_changed: bool = False,
    ) -> Pushed:
        """`push`, returning what it did: the version, whether the push made it, and the
        model's latest READY version before it (`pushed.repeats_previous` is True when a
        new version holds exactly its files)."""
        return await push_report(
            self,
            target,
            Path(path),
            finalize=finalize,
            concurrency=concurrency,
            chunk_size=chunk_size,
            progress=progress,
            fail_on_error=fail_on_error,
            if_changed=if_changed,
        )

    async def pull(
        self,
        reference: str,
        dest: str | os.PathLike[str],
        *,
        concurrency: int = 4,
        progress: Progress | None = None,
    ) -> art.ListManifestResponse:
        """Download every file of a READY version (`ns/model@alias`, `ns/model:7`, `ns/model`)
        below `dest`, each verified; call again to resume. Returns the manifest."""
        return await pull(self, reference, Path(dest), concurrency=concurrency, progress=progress)

    def live(
        self,
        *,
        references: Iterable[str] = (),
        models: Iterable[str] = (),
        bookmark_interval: float = 1.0,
    ) -> LiveCache:
        """A live cache of `references` (or every alias and `latest` of `models`): loaded,
        then kept current by Watch; `resolve()` answers from memory. Use `async with`."""
        return LiveCache(
            self, references=references, models=models, bookmark_interval=bookmark_interval
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
    ) -> AsyncGenerator[ws.WatchResponse, None]:
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
        return watch_async(self, resumption)

    async def _run(self, call: Call[T]) -> T:
        attempts = self._attempts(call)
        rpc = getattr(self._stubs[call.service], call.method)
        self._tokens.stamp(call.request)
        while True:
            try:
                reply = await rpc(
                    call.request, timeout=attempts.remaining(), metadata=self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                error = error_from_rpc(exc)
                delay = attempts.next_delay(error.code, error.reason)
                if delay is None:
                    raise error from exc
                await asyncio.sleep(delay)
            else:
                self._tokens.read(reply)
                return call.unwrap(reply)

    async def _iterate(self, pages: Pages[T]) -> AsyncIterator[T]:
        token = ""
        while True:
            reply = await self._run(pages.call(token))
            for item in pages.items(reply):
                yield item
            token = reply.next_page_token
            if not token:
                return

    async def _upload(
        self, requests: AsyncIterator[art.UploadFileRequest]
    ) -> art.UploadFileResponse:
        """One UploadFile stream, without a deadline; an error of `requests` is raised as
        itself (grpc would only cancel the call)."""
        source = _Watched(requests)
        try:
            reply: art.UploadFileResponse = await self._artifacts.UploadFile(
                source, metadata=self._metadata
            )
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            if source.error is not None:
                raise source.error from None
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise error_from_rpc(exc) from exc
        self._tokens.read(reply)
        return reply

    async def download_file(
        self, reference: str, path: str, *, offset: int = 0, limit: int = 0
    ) -> AsyncIterator[memoryview]:
        """Stream one file of a READY version from `offset`, at most `limit` bytes (0: to
        the end), as bytes-like views; no deadline, no verification (see `pull`)."""
        request = art.DownloadFileRequest(
            reference=reference, path=path, offset=offset, limit=limit
        )
        async for received in self._download(request):
            if received.data:
                yield received.data

    async def _download(self, request: art.DownloadFileRequest) -> AsyncIterator[Received]:
        """One DownloadFile stream, without a deadline."""
        call = self._download_stream(request, metadata=self._metadata)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc) from exc
        finally:
            call.cancel()  # no-op once done; stops the server when the caller stops early

    create_namespace = _awaitable(calls.create_namespace)
    get_namespace = _awaitable(calls.get_namespace)
    list_namespaces = _async_pages(calls.list_namespaces)
    create_model = _awaitable(calls.create_model)
    get_model = _awaitable(calls.get_model)
    list_models = _async_pages(calls.list_models)
    update_model = _awaitable(calls.update_model)
    delete_model = _awaitable(calls.delete_model)
    undelete_model = _awaitable(calls.undelete_model)
    create_version = _awaitable(versions.create_version)
    import_version = _awaitable(versions.import_version)
    get_version = _awaitable(versions.get_version)
    list_versions = _async_pages(versions.list_versions)
    search_versions = _async_pages(versions.search_versions)
    add_lineage = _awaitable(lineage_calls.add_lineage)
    lineage = _async_pages(lineage_calls.lineage)
    update_version = _awaitable(versions.update_version)
    archive_version = _awaitable(versions.archive_version)
    restore_version = _awaitable(versions.restore_version)
    set_alias = _awaitable(versions.set_alias)
    delete_alias = _awaitable(versions.delete_alias)
    list_aliases = _awaitable(versions.list_aliases)
    alias_history = _async_pages(versions.alias_history)
    rollback_alias = _awaitable(versions.rollback_alias)
    resolve = _awaitable(versions.resolve)
    batch_get = _awaitable(versions.batch_get)
    list_manifest = _awaitable(artifacts.list_manifest)
    finalize_version = _awaitable(artifacts.finalize_version)
    fail_version = _awaitable(artifacts.fail_version)
    find_missing_blobs = _awaitable(artifacts.find_missing_blobs)
    create_webhook = _awaitable(webhooks.create_webhook)
    get_webhook = _awaitable(webhooks.get_webhook)
    list_webhooks = _async_pages(webhooks.list_webhooks)
    delete_webhook = _awaitable(webhooks.delete_webhook)
    list_deliveries = _async_pages(webhooks.list_deliveries)
    redeliver = _awaitable(webhooks.redeliver)
    set_alias_policy = _awaitable(approvals.set_alias_policy)
    get_alias_policy = _awaitable(approvals.get_alias_policy)
    request_alias_move = _awaitable(approvals.request_alias_move)
    approve = _awaitable(approvals.approve)
    reject = _awaitable(approvals.reject)
    list_change_requests = _awaitable(approvals.list_change_requests)

    list_events = _async_pages(audit.list_events)
    list_denials = _async_pages(audit.list_denials)
    verify_audit_log = _awaitable(audit.verify_audit_log)
    grant = _awaitable(access.grant)
    revoke = _awaitable(access.revoke)
    list_bindings = _async_pages(access.list_bindings)
    explain_access = _awaitable(access.explain)
    whoami = _awaitable(identity.whoami)
    create_api_key = _awaitable(identity.create_api_key)
    list_api_keys = _async_pages(identity.list_api_keys)
    revoke_api_key = _awaitable(identity.revoke_api_key)


class _Watched:
    """An async iterator that remembers the exception its source raised."""

    def __init__(self, source: AsyncIterator[Any]) -> None:
        self._source = source
        self.error: BaseException | None = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        try:
            return await anext(self._source)
        except StopAsyncIteration:
            raise
        except Exception as exc:  # handed back to the caller by AsyncClient._upload
            self.error = exc
            raise
