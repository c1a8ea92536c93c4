"""Lineage through LineageService: a seeded graph (a dataset feeding 1,000 versions over 50
models, fine-tune chains 20 deep) answers the impact and upstream-of-@production walks as
a brute-force walk of the same edges says, bounded by depth and paged; cycles are refused,
also when two edges that would close one race; facts are added once; walks hide what the
caller may not read."""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Iterable

import asyncpg
import grpc
import pytest

from modelreg.v1 import lineage_service_pb2 as ln
from modelreg.v1 import lineage_service_pb2_grpc as ln_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from tests.helpers import rich_status, violations_of

pytestmark = pytest.mark.usefixtures("clean")
MODELS, CHAIN = 50, 20
READY = pb.MODEL_VERSION_STATE_READY
TRAINED, EVALUATED = ln.LINEAGE_EDGE_KIND_TRAINED_ON, ln.LINEAGE_EDGE_KIND_EVALUATED_ON
FINE_TUNED = ln.LINEAGE_EDGE_KIND_FINE_TUNED_FROM
UP, DOWN = ln.LINEAGE_DIRECTION_UP, ln.LINEAGE_DIRECTION_DOWN
Fact = tuple[str, int, str]  # (version, kind, target key)


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def dataset(text: str) -> ln.LineageNode:
    return ln.LineageNode(dataset=ln.LineageDataset(digest=digest(text), uri=f"s3://data/{text}"))


def version_node(name: str) -> ln.LineageNode:
    return ln.LineageNode(version=name)


def key_of(node: ln.LineageNode) -> str:
    which = node.WhichOneof("node")
    if which == "version":
        return node.version
    if which == "dataset":
        return node.dataset.digest
    if which == "run":
        return f"run:{node.run.system}/{node.run.external_id}"
    return f"code:{node.code.repository}@{node.code.commit}"


@pytest.fixture
def lineage(channel: grpc.aio.Channel) -> ln_grpc.LineageServiceAsyncStub:
    return ln_grpc.LineageServiceStub(channel)


async def seed(
    stub: rs_grpc.RegistryServiceAsyncStub, lineage: ln_grpc.LineageServiceAsyncStub
) -> tuple[list[Fact], dict[str, str]]:
    """The graph, returned as its facts, and each model's `production` target."""
    facts: list[Fact] = []
    production: dict[str, str] = {}
    shared, other = dataset("shared"), dataset("holdout")
    for m in range(MODELS):
        model = f"namespaces/default/models/m{m:02d}"
        await stub.CreateModel(
            rs.CreateModelRequest(parent="namespaces/default", model_id=f"m{m:02d}")
        )
        previous = ""
        for _ in range(CHAIN):
            made = await stub.CreateModelVersion(rs.CreateModelVersionRequest(
                parent=model, version=pb.ModelVersion(state=READY)
            ))  # fmt: skip
            name = made.version.name
            kind = TRAINED if made.version.number % 2 else EVALUATED
            edges = [ln.LineageEdgeSpec(kind=kind, target=shared)]
            facts.append((name, kind, shared.dataset.digest))
            if made.version.number % 5 == 0:
                edges.append(ln.LineageEdgeSpec(kind=EVALUATED, target=other))
                facts.append((name, EVALUATED, other.dataset.digest))
            if previous:
                edges.append(ln.LineageEdgeSpec(kind=FINE_TUNED, target=version_node(previous)))
                facts.append((name, FINE_TUNED, previous))
            await lineage.AddLineage(ln.AddLineageRequest(version=name, edges=edges))
            previous = name
        target = CHAIN - (m % 7)
        await stub.SetAlias(
            rs.SetAliasRequest(name=f"{model}/aliases/production", version_number=target)
        )
        production[f"{model}/versions/{target}"] = "production"
    return facts, production


def brute_force(facts: Iterable[Fact], start: str, direction: int, depth: int,
                kinds: set[int] | None = None) -> dict[Fact, int]:  # fmt: skip
    """Every fact reached from `start` within `depth` steps, with its least depth."""
    chosen = [f for f in facts if kinds is None or f[1] in kinds]
    reached: dict[Fact, int] = {}
    queue, seen = deque([(start, 0)]), {start: 0}
    while queue:
        node, at = queue.popleft()
        if at == depth:
            continue
        for fact in chosen:
            version, _, target = fact
            near, far = (version, target) if direction == UP else (target, version)
            if near != node:
                continue
            reached.setdefault(fact, at + 1)
            if far not in seen:
                seen[far] = at + 1
                queue.append((far, at + 1))
    return reached


async def walk_all(
    lineage: ln_grpc.LineageServiceAsyncStub, page_size: int = 37, **request: object
) -> tuple[list[ln.LineageEdge], ln.LineageNode]:
    edges: list[ln.LineageEdge] = []
    token = ""
    while True:
        reply = await lineage.GetLineage(
            ln.GetLineageRequest(page_size=page_size, page_token=token, **request)  # type: ignore[arg-type]
        )
        assert len(reply.edges) <= page_size
        edges += reply.edges
        token = reply.next_page_token
        if not token:
            return edges, reply.start


def as_facts(edges: Iterable[ln.LineageEdge]) -> dict[Fact, int]:
    found: dict[Fact, int] = {}
    for e in edges:
        fact = (e.version.version, int(e.kind), key_of(e.target))
        assert fact not in found, f"{fact} answered twice"
        found[fact] = e.depth
    return found


async def test_impact_and_upstream_walks_match_a_brute_force_walk(
    stub: rs_grpc.RegistryServiceAsyncStub, lineage: ln_grpc.LineageServiceAsyncStub
) -> None:
    facts, production = await seed(stub, lineage)
    shared = digest("shared")
    # impact of the dataset: every version trained or evaluated on it, and their aliases
    edges, start = await walk_all(lineage, dataset_digest=shared, direction=DOWN, max_depth=1)
    assert start.dataset.digest == shared
    assert as_facts(edges) == brute_force(facts, shared, DOWN, 1)
    assert len(edges) == MODELS * CHAIN
    aliased = {e.version.version: tuple(e.version.aliases) for e in edges if e.version.aliases}
    assert aliased == {name: ("production",) for name in production}
    # deeper: what was fine-tuned from those versions adds nothing new to reach here
    edges, _ = await walk_all(lineage, dataset_digest=shared, direction=DOWN, max_depth=3)
    assert as_facts(edges) == brute_force(facts, shared, DOWN, 3)
    # everything upstream of what @production serves, for a few models, bounded by depth
    for m in (0, 3, 6):
        ref = f"default/m{m:02d}@production"
        serving = next(
            n for n in production if n.startswith(f"namespaces/default/models/m{m:02d}/")
        )
        for depth in (1, 5, 50):
            edges, start = await walk_all(lineage, reference=ref, direction=UP, max_depth=depth)
            assert start.version == serving
            assert tuple(start.aliases) == ("production",)
            assert as_facts(edges) == brute_force(facts, serving, UP, depth), (ref, depth)
    # kinds narrow a walk: only the fine-tune chain
    edges, _ = await walk_all(lineage, reference="default/m01@production", direction=UP,
                              max_depth=50, kinds=[FINE_TUNED])  # fmt: skip
    serving = next(n for n in production if n.startswith("namespaces/default/models/m01/"))
    assert as_facts(edges) == brute_force(facts, serving, UP, 50, {FINE_TUNED})
    assert len(edges) == int(serving.rsplit("/", 1)[1]) - 1


async def test_a_cycle_is_refused_and_a_fact_is_added_once(
    stub: rs_grpc.RegistryServiceAsyncStub, lineage: ln_grpc.LineageServiceAsyncStub,
    db: asyncpg.Connection,
) -> None:  # fmt: skip
    names = await _versions(stub, 3)
    a, b, c = names
    await lineage.AddLineage(ln.AddLineageRequest(version=b, edges=[_parent(a)]))
    await lineage.AddLineage(ln.AddLineageRequest(version=c, edges=[_parent(b)]))
    events = await db.fetchval("SELECT count(*) FROM events WHERE kind = 'lineage.added'")
    for version, parent in ((a, c), (a, b), (a, a)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await lineage.AddLineage(ln.AddLineageRequest(version=version, edges=[_parent(parent)]))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert any("edges[0].target" in v for v in violations_of(rich_status(caught.value)))
    again = await lineage.AddLineage(ln.AddLineageRequest(version=c, edges=[_parent(b)]))
    assert list(again.added) == []
    assert await db.fetchval("SELECT count(*) FROM events WHERE kind = 'lineage.added'") == events
    assert await db.fetchval("SELECT count(*) FROM lineage_edges") == 2


async def test_two_edges_racing_to_close_a_cycle_never_both_commit(
    stub: rs_grpc.RegistryServiceAsyncStub, lineage: ln_grpc.LineageServiceAsyncStub,
    db: asyncpg.Connection,
) -> None:  # fmt: skip
    names = await _versions(stub, 20)
    pairs = [(names[i], names[i + 1]) for i in range(0, 20, 2)]

    async def add(version: str, parent: str) -> bool:
        try:
            await lineage.AddLineage(ln.AddLineageRequest(version=version, edges=[_parent(parent)]))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            return False
        return True

    results = await asyncio.gather(*(add(x, y) for x, y in pairs), *(add(y, x) for x, y in pairs))
    both = sum(results[i] and results[i + len(pairs)] for i in range(len(pairs)))
    neither = sum(not results[i] and not results[i + len(pairs)] for i in range(len(pairs)))
    assert both == 0  # a cycle committed
    assert neither == 0  # each pair: one of the two edges is a fine edge
    cycles = await db.fetchval(
        "SELECT count(*) FROM lineage_edges x JOIN lineage_edges y"
        " ON x.from_node = y.to_node AND x.to_node = y.from_node"
    )
    assert cycles == 0


async def test_walks_hide_what_the_caller_may_not_read(
    stub: rs_grpc.RegistryServiceAsyncStub, lineage: ln_grpc.LineageServiceAsyncStub,
    channel: grpc.aio.Channel,
) -> None:  # fmt: skip
    await stub.CreateNamespace(rs.CreateNamespaceRequest(namespace_id="hidden"))
    mine = await _versions(stub, 2)
    await stub.CreateModel(rs.CreateModelRequest(parent="namespaces/hidden", model_id="h"))
    hidden = (await stub.CreateModelVersion(rs.CreateModelVersionRequest(
        parent="namespaces/hidden/models/h", version=pb.ModelVersion(state=READY)
    ))).version.name  # fmt: skip
    data = dataset("mixed")
    for name in (*mine, hidden):
        await lineage.AddLineage(ln.AddLineageRequest(
            version=name, edges=[ln.LineageEdgeSpec(kind=TRAINED, target=data)]
        ))  # fmt: skip
    await lineage.AddLineage(ln.AddLineageRequest(version=hidden, edges=[_parent(mine[0])]))
    meta = await _viewer_of_default(channel)
    reply = await lineage.GetLineage(ln.GetLineageRequest(
        dataset_digest=data.dataset.digest, direction=DOWN, max_depth=5
    ), metadata=meta)  # fmt: skip
    assert sorted(e.version.version for e in reply.edges) == sorted(mine)
    reply = await lineage.GetLineage(
        ln.GetLineageRequest(reference="default/chain:1", direction=DOWN, max_depth=5),
        metadata=meta,
    )
    assert hidden not in {e.version.version for e in reply.edges}
    admin_view = await lineage.GetLineage(
        ln.GetLineageRequest(reference="default/chain:1", direction=DOWN, max_depth=5)
    )
    assert hidden in {e.version.version for e in admin_view.edges}  # it is there to hide
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lineage.GetLineage(ln.GetLineageRequest(reference="hidden/h:1"), metadata=meta)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lineage.AddLineage(
            ln.AddLineageRequest(version=mine[1], edges=[_parent(hidden)]), metadata=meta
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _viewer_of_default(channel: grpc.aio.Channel) -> tuple[tuple[str, str], ...]:
    """Call metadata of a new principal that may read namespace `default` only."""
    from modelreg.v1 import access_service_pb2 as ac
    from modelreg.v1 import access_service_pb2_grpc as ac_grpc
    from modelreg.v1 import identity_service_pb2 as ids
    from modelreg.v1 import identity_service_pb2_grpc as ids_grpc

    reply = await ids_grpc.IdentityServiceStub(channel).CreateApiKey(
        ids.CreateApiKeyRequest(principal="reader")
    )
    binding = ac.RoleBinding(role=ac.ROLE_VIEWER, subject_kind=ac.SUBJECT_KIND_PRINCIPAL,
                             subject="reader", namespace="default")  # fmt: skip
    await ac_grpc.AccessServiceStub(channel).CreateRoleBinding(
        ac.CreateRoleBindingRequest(binding=binding)
    )
    return (("authorization", f"Bearer {reply.key}"),)


async def _versions(stub: rs_grpc.RegistryServiceAsyncStub, count: int) -> list[str]:
    await stub.CreateModel(rs.CreateModelRequest(parent="namespaces/default", model_id="chain"))
    names = []
    for _ in range(count):
        made = await stub.CreateModelVersion(rs.CreateModelVersionRequest(
            parent="namespaces/default/models/chain", version=pb.ModelVersion(state=READY)
        ))  # fmt: skip
        names.append(made.version.name)
    return names


def _parent(name: str) -> ln.LineageEdgeSpec:
    return ln.LineageEdgeSpec(kind=FINE_TUNED, target=version_node(name))
