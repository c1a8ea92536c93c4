"""Authorization over the real grpc.aio server (authenticated by the test double of our
Authenticator port, tests/integration/access_server.py): roles on representative RPCs,
denials that change nothing, per-item batches, filtered lists, ExplainAccess, Watch
streams that deliver only what their principal may read, grants followed by another
server on the same database, and revocations honoured at their consistency token."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import grpc
import pytest

from modelreg.app import apply_migrations
from modelreg.v1 import access_service_pb2 as ac
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as pb
from modelreg.v1 import watch_service_pb2 as ws
from modelreg.v1 import webhook_service_pb2 as wh
from modelreg.v1 import webhook_service_pb2_grpc as wh_grpc
from tests.conftest import DatabaseFactory
from tests.helpers import reason_of, rich_status
from tests.integration.access_server import ROOT, AccessServer, as_, serve_with_access
from tests.integration.receiver import Receiver
from tests.integration.rpcs import stored_state

ROLES = {"viewer": ac.ROLE_VIEWER, "editor": ac.ROLE_EDITOR, "approver": ac.ROLE_APPROVER}
ROLES["admin"] = ac.ROLE_ADMIN


@pytest.fixture(scope="module")
async def access_db(new_database: DatabaseFactory) -> str:
    """A database of its own, its first global admin bound before any server starts (the
    grant cache loads it at start; the identity helper's first-start admin does the same)."""
    url = await new_database()
    await apply_migrations(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO role_bindings (role, subject_kind, subject, scope, created_by)"
            " VALUES ('admin', 'principal', $1, '', 'test')",
            ROOT,
        )
    finally:
        await conn.close()
    return url


@pytest.fixture(scope="module")
async def srv(
    access_db: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AccessServer]:
    async with AsyncExitStack() as stack:
        yield await serve_with_access(access_db, tmp_path_factory.mktemp("home"), stack)


@pytest.fixture(scope="module")
async def db(access_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(access_db)
    yield conn
    await conn.close()


@pytest.fixture
async def ns(srv: AccessServer) -> str:
    """A fresh namespace with a READY version 1 of model m, aliased `prod`."""
    name = f"ns{uuid.uuid4().hex[:10]}"
    root = as_(ROOT)
    await srv.registry.CreateNamespace(rs.CreateNamespaceRequest(namespace_id=name), metadata=root)
    await srv.registry.CreateModel(
        rs.CreateModelRequest(parent=f"namespaces/{name}", model_id="m"), metadata=root
    )
    await srv.registry.CreateModelVersion(
        rs.CreateModelVersionRequest(
            parent=f"namespaces/{name}/models/m",
            version=pb.ModelVersion(state=pb.MODEL_VERSION_STATE_READY),
        ),
        metadata=root,
    )
    await srv.registry.SetAlias(
        rs.SetAliasRequest(name=f"namespaces/{name}/models/m/aliases/prod", version_number=1),
        metadata=root,
    )
    return name


async def grant(
    srv: AccessServer, role: str, subject: str, namespace: str = "", *, group: bool = False
) -> int:
    kind = ac.SUBJECT_KIND_GROUP if group else ac.SUBJECT_KIND_PRINCIPAL
    binding = ac.RoleBinding(
        role=ROLES[role], subject=subject, namespace=namespace, subject_kind=kind
    )
    reply = await srv.access.CreateRoleBinding(
        ac.CreateRoleBindingRequest(binding=binding), metadata=as_(ROOT)
    )
    return reply.revision


async def revoke(srv: AccessServer, role: str, subject: str, namespace: str = "") -> int:
    binding = ac.RoleBinding(role=ROLES[role], subject=subject, namespace=namespace)
    reply = await srv.access.DeleteRoleBinding(
        ac.DeleteRoleBindingRequest(binding=binding), metadata=as_(ROOT)
    )
    return reply.revision


def _who() -> str:
    return f"u{uuid.uuid4().hex[:8]}"


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as failed:
        return failed.code()
    return grpc.StatusCode.OK


OK, DENIED = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED


async def test_roles_on_representative_rpcs(srv: AccessServer, ns: str) -> None:
    callers = {role: _who() for role in ROLES}
    for role, name in callers.items():
        await grant(srv, role, name, ns)
    other = _who()
    await grant(srv, "editor", other, f"{ns}x")  # editor of another namespace
    model = f"namespaces/{ns}/models/m"

    def calls(meta: Any, tag: str) -> dict[str, Callable[[], Any]]:
        r = srv.registry
        # made when called: a grpc.aio call starts as soon as it is made
        return {
            "get": lambda: r.GetModelVersion(
                rs.GetModelVersionRequest(name=f"{model}/versions/1"), metadata=meta
            ),
            "resolve": lambda: r.ResolveReference(
                rs.ResolveReferenceRequest(reference=f"{ns}/m@prod"), metadata=meta
            ),
            "list": lambda: r.ListModels(
                rs.ListModelsRequest(parent=f"namespaces/{ns}"), metadata=meta
            ),
            "create": lambda: r.CreateModel(
                rs.CreateModelRequest(parent=f"namespaces/{ns}", model_id=f"n{tag}"), metadata=meta
            ),
            "alias": lambda: r.SetAlias(
                rs.SetAliasRequest(name=f"{model}/aliases/a{tag}", version_number=1), metadata=meta
            ),
            "delete": lambda: r.DeleteModel(
                rs.DeleteModelRequest(name=f"namespaces/{ns}/models/n{tag}"), metadata=meta
            ),
            "bindings": lambda: srv.access.ListRoleBindings(
                ac.ListRoleBindingsRequest(namespace=ns), metadata=meta
            ),
        }

    expected = {
        "nobody": dict.fromkeys(
            ("get", "resolve", "list", "create", "alias", "delete", "bindings"), UNAUTH
        ),
        "other": dict.fromkeys(
            ("get", "resolve", "list", "create", "alias", "delete", "bindings"), DENIED
        ),
        "viewer": {
            "get": OK,
            "resolve": OK,
            "list": OK,
            "create": DENIED,
            "alias": DENIED,
            "delete": DENIED,
            "bindings": DENIED,
        },
        "editor": {
            "get": OK,
            "resolve": OK,
            "list": OK,
            "create": OK,
            "alias": OK,
            "delete": DENIED,
            "bindings": DENIED,
        },
        "approver": {
            "get": OK,
            "resolve": OK,
            "list": OK,
            "create": OK,
            "alias": OK,
            "delete": DENIED,
            "bindings": DENIED,
        },
        "admin": {
            "get": OK,
            "resolve": OK,
            "list": OK,
            "create": OK,
            "alias": OK,
            "delete": OK,
            "bindings": OK,
        },
    }
    metas: dict[str, Any] = {"nobody": (), "other": as_(other)}
    metas |= {role: as_(name) for role, name in callers.items()}
    got = {}
    for who, meta in metas.items():
        got[who] = {rpc: await _code(call()) for rpc, call in calls(meta, who).items()}
    assert got == expected


async def test_a_denial_names_the_permission_and_the_binding_to_ask_for(
    srv: AccessServer, ns: str, db: asyncpg.Connection
) -> None:
    alice = _who()
    await grant(srv, "viewer", alice, ns)
    before, head = await stored_state(db), await _head(db)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await srv.registry.CreateModel(
            rs.CreateModelRequest(parent=f"namespaces/{ns}", model_id="x"), metadata=as_(alice)
        )
    assert caught.value.code() is DENIED
    assert caught.value.details() == (
        f"{alice} may not models.write in namespace {ns}; ask an admin:"
        f" modelreg access grant editor {alice} --namespace {ns}"
    )
    status = rich_status(caught.value)
    assert reason_of(status) == "PERMISSION_DENIED"
    assert await stored_state(db) == before  # a denied call changes nothing
    assert await _head(db) == head
    denial = srv.denials.denials[-1]
    assert (denial.actor, denial.permission) == (alice, "models.write")
    assert denial.method == "/modelreg.v1.RegistryService/CreateModel"


async def test_a_denied_read_is_not_recorded_but_a_denied_upload_is(
    srv: AccessServer, ns: str, db: asyncpg.Connection
) -> None:
    bob = _who()
    count = len(srv.denials.denials)
    code = await _code(
        srv.registry.GetModel(
            rs.GetModelRequest(name=f"namespaces/{ns}/models/m"), metadata=as_(bob)
        )
    )
    assert code is DENIED
    assert len(srv.denials.denials) == count
    before = await stored_state(db)

    async def upload() -> AsyncIterator[art.UploadFileRequest]:
        header = art.UploadHeader(
            version=f"namespaces/{ns}/models/m/versions/1",
            path="w",
            size=1,
            sha256="0" * 64,
            upload_id="u",
        )
        yield art.UploadFileRequest(header=header, data=b"x", finish_write=True)

    assert await _code(srv.artifacts.UploadFile(upload(), metadata=as_(bob))) is DENIED
    assert srv.denials.denials[-1].method == "/modelreg.v1.ArtifactService/UploadFile"
    assert await stored_state(db) == before


async def test_a_batch_mixing_namespaces_is_denied_only_on_unreadable_items(
    srv: AccessServer, ns: str
) -> None:
    root = as_(ROOT)
    other = f"{ns}b"
    await srv.registry.CreateNamespace(rs.CreateNamespaceRequest(namespace_id=other), metadata=root)
    await srv.registry.CreateModel(
        rs.CreateModelRequest(parent=f"namespaces/{other}", model_id="m"), metadata=root
    )
    carol = _who()
    await grant(srv, "viewer", carol, ns)
    refs = [f"{ns}/m:1", f"{other}/m:1", f"{other}/nothing:1", f"{ns}/m@prod", "BAD REF"]
    reply = await srv.registry.BatchGetModelVersions(
        rs.BatchGetModelVersionsRequest(references=refs), metadata=as_(carol)
    )
    codes = [r.error.code if r.HasField("error") else 0 for r in reply.results]
    denied, invalid = (
        grpc.StatusCode.PERMISSION_DENIED.value[0],
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
    )
    # an unreadable namespace's existing and missing models answer alike: nothing leaks
    assert codes == [0, denied, denied, 0, invalid]
    assert reply.results[0].version.number == 1


async def test_list_namespaces_shows_only_readable_ones_in_full_pages(srv: AccessServer) -> None:
    root = as_(ROOT)
    prefix = f"l{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}{i:02d}" for i in range(9)]
    for name in names:
        await srv.registry.CreateNamespace(
            rs.CreateNamespaceRequest(namespace_id=name), metadata=root
        )
    dave = _who()
    readable = names[1::3]  # 1, 4, 7: each between two unreadable ones
    for name in readable:
        await grant(srv, "viewer", dave, name)
    for size in (1, 2, 3):
        seen, token, pages = [], "", []
        while True:
            reply = await srv.registry.ListNamespaces(
                rs.ListNamespacesRequest(page_size=size, page_token=token), metadata=as_(dave)
            )
            pages.append(len(reply.namespaces))
            seen += [n.name.removeprefix("namespaces/") for n in reply.namespaces]
            token = reply.next_page_token
            if not token:
                break
        assert seen == readable
        assert all(count == size for count in pages[:-1]), pages  # no short page but the last


async def test_explain_access(srv: AccessServer, ns: str) -> None:
    erin, frank = _who(), _who()
    await grant(srv, "editor", "team-" + ns, ns, group=True)
    method = "/modelreg.v1.RegistryService/SetAlias"
    resource = f"namespaces/{ns}/models/m/aliases/prod"
    mine = await srv.access.ExplainAccess(
        ac.ExplainAccessRequest(method=method, resource=resource),
        metadata=as_(erin, ["team-" + ns]),
    )
    assert (mine.allowed, mine.permission, mine.namespace, mine.principal) == (
        True,
        "aliases.move",
        ns,
        erin,
    )
    assert (mine.binding.subject, mine.binding.subject_kind) == (
        "team-" + ns,
        ac.SUBJECT_KIND_GROUP,
    )
    # others: admins only
    code = await _code(
        srv.access.ExplainAccess(
            ac.ExplainAccessRequest(principal=frank, method=method, resource=resource),
            metadata=as_(erin),
        )
    )
    assert code is DENIED
    theirs = await srv.access.ExplainAccess(
        ac.ExplainAccessRequest(principal=frank, method=method, resource=f"{ns}/m@prod"),
        metadata=as_(ROOT),
    )
    assert not theirs.allowed
    assert theirs.reason.endswith(f"modelreg access grant editor {frank} --namespace {ns}")
    opened = await srv.access.ExplainAccess(
        ac.ExplainAccessRequest(method="/grpc.health.v1.Health/Check"), metadata=as_(frank)
    )
    assert opened.allowed


async def test_watch_delivers_only_readable_events_and_follows_grants(
    srv: AccessServer, ns: str
) -> None:
    root = as_(ROOT)
    hidden = f"{ns}h"
    await srv.registry.CreateNamespace(
        rs.CreateNamespaceRequest(namespace_id=hidden), metadata=root
    )
    gina = _who()
    await grant(srv, "viewer", gina, ns)
    call = srv.watch.Watch(ws.WatchRequest(), metadata=as_(gina))
    first = await _read(call)
    assert first.bookmark

    async def event_resources() -> list[str]:
        while True:
            message = await _read(call)
            if message.events:
                return [e.resource for e in message.events]

    async def touch(namespace: str, model: str) -> None:
        await srv.registry.CreateModel(
            rs.CreateModelRequest(parent=f"namespaces/{namespace}", model_id=model), metadata=root
        )

    await touch(hidden, "secret")  # not readable: never delivered
    await touch(ns, "seen")
    assert await event_resources() == [f"namespaces/{ns}/models/seen"]
    await grant(srv, "viewer", gina, hidden)  # the open stream picks the grant up
    await touch(hidden, "now-seen")
    assert await event_resources() == [f"namespaces/{hidden}/models/now-seen"]
    await revoke(srv, "viewer", gina, hidden)
    await touch(hidden, "hidden-again")
    await touch(ns, "last")
    assert await event_resources() == [f"namespaces/{ns}/models/last"]
    call.cancel()


async def test_a_grant_in_one_server_is_followed_by_another(
    srv: AccessServer, ns: str, access_db: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two servers on one database, each with its own grant cache, LISTEN connection and
    follower (as two worker processes have): a grant through one is decided by the other,
    and a revocation too, once the call carries the revocation's revision."""
    harry = _who()
    async with AsyncExitStack() as stack:
        second = await serve_with_access(access_db, tmp_path_factory.mktemp("home2"), stack)
        request = rs.ResolveReferenceRequest(reference=f"{ns}/m@prod")
        assert await _code(second.registry.ResolveReference(request, metadata=as_(harry))) is DENIED
        revision = await grant(srv, "viewer", harry, ns)  # through the first server
        request.min_revision = revision
        assert await _code(second.registry.ResolveReference(request, metadata=as_(harry))) is OK
        revision = await revoke(srv, "viewer", harry, ns)
        request.min_revision = revision
        assert await _code(second.registry.ResolveReference(request, metadata=as_(harry))) is DENIED
        # and without a token, once its follower has applied the revocation
        cache = second.running.services.grants
        assert cache is not None
        await cache.reached(revision, wait_seconds=30)
        request.min_revision = 0
        assert await _code(second.registry.ResolveReference(request, metadata=as_(harry))) is DENIED


async def test_list_role_bindings_filters_and_pages(srv: AccessServer, ns: str) -> None:
    ivy = _who()
    for role in ("viewer", "editor", "admin"):
        await grant(srv, role, ivy, ns)
    await grant(srv, "viewer", ivy, f"{ns}z")
    seen, token = [], ""
    while True:
        reply = await srv.access.ListRoleBindings(
            ac.ListRoleBindingsRequest(subject=ivy, page_size=2, page_token=token),
            metadata=as_(ROOT),
        )
        seen += [(b.namespace, b.role) for b in reply.bindings]
        token = reply.next_page_token
        if not token:
            break
    # in (namespace, subject kind, subject, role) order
    assert seen == [
        (ns, ac.ROLE_ADMIN),
        (ns, ac.ROLE_EDITOR),
        (ns, ac.ROLE_VIEWER),
        (f"{ns}z", ac.ROLE_VIEWER),
    ]
    # a namespace admin lists its own namespace, not another
    assert (
        await _code(
            srv.access.ListRoleBindings(ac.ListRoleBindingsRequest(namespace=ns), metadata=as_(ivy))
        )
        is OK
    )
    assert (
        await _code(
            srv.access.ListRoleBindings(
                ac.ListRoleBindingsRequest(namespace=f"{ns}z"), metadata=as_(ivy)
            )
        )
        is DENIED
    )
    code = await _code(grant(srv, "viewer", ivy, f"{ns}z"))
    assert code is grpc.StatusCode.ALREADY_EXISTS


async def _read(call: Any) -> ws.WatchResponse:
    message = await call.read()
    assert isinstance(message, ws.WatchResponse), message
    return message


async def _head(db: asyncpg.Connection) -> int:
    head: int = await db.fetchval("SELECT coalesce(max(revision), 0) FROM events")
    return head


async def test_a_revoked_admin_loses_access_at_once(srv: AccessServer, ns: str) -> None:
    jo = _who()
    await grant(srv, "admin", jo, ns)
    model = rs.GetModelRequest(name=f"namespaces/{ns}/models/m")
    assert await _code(srv.registry.GetModel(model, metadata=as_(jo))) is OK
    await revoke(srv, "admin", jo, ns)  # the writer's own process applies it before answering
    assert await _code(srv.registry.GetModel(model, metadata=as_(jo))) is DENIED


async def test_a_webhook_delivers_only_what_its_creator_may_read_now(
    srv: AccessServer, ns: str
) -> None:
    receiver = Receiver()
    await receiver.up()
    try:
        await _webhook_follows_its_creator(srv, ns, receiver)
    finally:
        await receiver.down()


async def _webhook_follows_its_creator(srv: AccessServer, ns: str, receiver: Receiver) -> None:
    root, wendy, hook = as_(ROOT), _who(), f"h{uuid.uuid4().hex[:8]}"
    hidden = f"{ns}w"
    await srv.registry.CreateNamespace(
        rs.CreateNamespaceRequest(namespace_id=hidden), metadata=root
    )
    await grant(srv, "admin", wendy)  # webhooks.manage is global
    webhooks = wh_grpc.WebhookServiceStub(srv.channel)
    created = await webhooks.CreateWebhook(
        wh.CreateWebhookRequest(
            webhook_id=hook,
            webhook=wh.Webhook(
                url=f"{receiver.url}/{hook}", filter=wh.WebhookFilter(kinds=["model.created"])
            ),
        ),
        metadata=as_(wendy),
    )
    receiver.secrets[hook] = created.secret
    await revoke(srv, "admin", wendy)  # now she may read only `ns`
    await grant(srv, "viewer", wendy, ns)
    for namespace, model in ((hidden, "secret"), (ns, "seen")):
        await srv.registry.CreateModel(
            rs.CreateModelRequest(parent=f"namespaces/{namespace}", model_id=model), metadata=root
        )

    def bodies() -> list[bytes]:
        return [body for found in receiver.bodies(hook).values() for body in found]

    # delivered in commit order: once `seen` arrived, `secret` was sent or skipped
    await receiver.wait_for(lambda: any(b"models/seen" in body for body in bodies()))
    assert not any(b"secret" in body for body in bodies())
    await webhooks.DeleteWebhook(wh.DeleteWebhookRequest(name=f"webhooks/{hook}"), metadata=root)
