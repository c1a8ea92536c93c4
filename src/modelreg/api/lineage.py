"""LineageService: parse the request, call the domain, convert the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from modelreg.api.authorization import denied
from modelreg.api.convert import timestamp
from modelreg.api.identity import actor_of, caller
from modelreg.api.services import add_service
from modelreg.domain.access import Permission
from modelreg.domain.consistency import Consistency
from modelreg.domain.errors import InvalidArgument
from modelreg.domain.grants import GrantCache
from modelreg.domain.lineage import (
    Code,
    Dataset,
    Direction,
    Edge,
    EdgeKind,
    Lineage,
    Node,
    Run,
    Walk,
    check_digest,
)
from modelreg.domain.names import VersionKey, parse_reference
from modelreg.v1 import lineage_service_pb2 as ln

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

SERVICE = ln.DESCRIPTOR.services_by_name["LineageService"]


def add_lineage_service(
    servicer: LineageServicer, server: grpc.aio.Server, *, consistency: Consistency
) -> None:
    """Register every LineageService RPC."""
    add_service(server, servicer, SERVICE, ln, consistency=consistency)


class LineageServicer:
    """The LineageService RPCs (the gate decided AddLineage's namespace; GetLineage is
    decided here: read on the start version's namespace, the walk filtered to the rest)."""

    def __init__(self, lineage: Lineage, grants: GrantCache | None) -> None:
        self._lineage = lineage
        self._grants = grants

    async def AddLineage(
        self, request: ln.AddLineageRequest, context: Context
    ) -> ln.AddLineageResponse:
        ref = parse_reference(request.version, "version")
        edges = [(spec.kind, node_from_proto(spec.target, f"edges[{i}].target"))
                 for i, spec in enumerate(request.edges)]  # fmt: skip
        for _, target in edges:  # linking to a version reads it: no existence leaks
            if isinstance(target, VersionKey):
                self._check_read(target.model.namespace)
        added, revision = await self._lineage.add(ref=ref, edges=edges, actor=actor_of(context))
        return ln.AddLineageResponse(added=[edge_to_proto(e, {}) for e in added],
                                     revision=revision)  # fmt: skip

    async def GetLineage(
        self, request: ln.GetLineageRequest, context: Context
    ) -> ln.GetLineageResponse:
        start: VersionKey | Dataset
        which = request.WhichOneof("start")
        if which == "dataset_digest":
            start = Dataset(check_digest(request.dataset_digest, "dataset_digest"))
        elif which == "dataset_uri":
            if not request.dataset_uri or len(request.dataset_uri) > 1024:
                raise InvalidArgument.field("dataset_uri", "a URI of 1 to 1024 characters")
            start = Dataset("", request.dataset_uri)
        elif request.reference:
            ref = parse_reference(request.reference, "reference")
            self._check_read(ref.model.namespace)
            start = await self._lineage.start_of(ref)
        else:
            raise InvalidArgument.field(
                "reference", "give a reference, a dataset_digest or a dataset_uri"
            )
        walk = Walk(
            start,
            _direction(request.direction),
            request.max_depth or 10,
            frozenset(_kind(k, "kinds") for k in request.kinds),
            self._grants.readable(caller()) if self._grants is not None else None,
        )
        page = await self._lineage.walk(walk=walk, size=request.page_size, token=request.page_token)
        return ln.GetLineageResponse(
            start=node_to_proto(start, page.aliases),
            edges=[edge_to_proto(e, page.aliases) for e in page.edges],
            next_page_token=page.next_token,
        )

    def _check_read(self, namespace: str) -> None:
        if self._grants is None:
            return
        decision = self._grants.decide(caller(), Permission.MODELS_READ, namespace)
        if not decision.allowed:
            raise denied(decision)


def _direction(value: int) -> Direction:
    try:
        return Direction(value or Direction.UP)
    except ValueError:
        raise InvalidArgument.field(
            "direction", f"{value} is not a direction (UP, DOWN, BOTH)"
        ) from None


def _kind(value: int, field: str) -> EdgeKind:
    try:
        return EdgeKind(value)
    except ValueError:
        raise InvalidArgument.field(field, f"{value} is not a lineage edge kind") from None


def node_from_proto(node: ln.LineageNode, field: str) -> Node | None:
    """The domain node of a request's target (None when unset)."""
    which = node.WhichOneof("node")
    if which == "version":
        ref = parse_reference(node.version, f"{field}.version")
        if ref.number is None:
            raise InvalidArgument.field(f"{field}.version", "a parent is a numbered version")
        return VersionKey(ref.model, ref.number)
    if which == "dataset":
        d = node.dataset
        return Dataset(d.digest.lower(), d.uri, d.name, d.version)
    if which == "run":
        r = node.run
        return Run(r.system, r.external_id, r.uri, dict(r.parameters))
    if which == "code":
        return Code(node.code.repository, node.code.commit)
    return None


def node_to_proto(node: Node, aliases: dict[VersionKey, tuple[str, ...]] | Any) -> ln.LineageNode:
    if isinstance(node, VersionKey):
        return ln.LineageNode(version=node.name, aliases=aliases.get(node, ()))
    if isinstance(node, Dataset):
        return ln.LineageNode(dataset=ln.LineageDataset(
            uri=node.uri, digest=node.digest, name=node.name, version=node.version
        ))  # fmt: skip
    if isinstance(node, Run):
        return ln.LineageNode(run=ln.LineageRun(
            system=node.system, external_id=node.external_id, uri=node.uri,
            parameters=dict(node.parameters),
        ))  # fmt: skip
    return ln.LineageNode(code=ln.LineageCode(repository=node.repository, commit=node.commit))


def edge_to_proto(edge: Edge, aliases: dict[VersionKey, tuple[str, ...]] | Any) -> ln.LineageEdge:
    reply = ln.LineageEdge(
        version=node_to_proto(edge.version, aliases),
        kind=int(edge.kind),  # type: ignore[arg-type]
        target=node_to_proto(edge.target, aliases),
        depth=edge.depth,
        creator=edge.creator,
        create_time=timestamp(edge.create_time),
    )
    return reply
