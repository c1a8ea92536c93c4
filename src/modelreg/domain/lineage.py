"""Lineage: where every version came from, as its own aggregate (DESIGN.md §12).

Nodes are versions, datasets (found by content digest, or by URI when given without
one), runs (system + external id) and code (repository + commit). Edges go from a
version to what it came from; they are append-only facts, each written with a
`lineage.added` event in the transaction that records it, and an edge already recorded
adds nothing (so retries and replays are safe).
A parent edge (derived, fine-tuned, distilled) that would make a version its own
ancestor is refused: parent edges are checked and written under one transaction-level
lock, so two concurrent edges that would together close a cycle cannot both commit.

Walks go up (what a node came from), down (what came from it) or both, bounded by
`max_depth` (at most 50) and a page size (at most 1000), and are paged nearest-first by keyset
on (depth, edge id). A walk never enters a version in a namespace the caller may not
read: such versions and everything reached only through them are left out.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.names import Reference, VersionKey
from modelreg.domain.paging import MAX_POSITION, PageTokens, page_of

MAX_DEPTH = 50
DEFAULT_DEPTH = 10
MAX_ADD = 100  # edges per AddLineage
DEFAULT_PAGE, MAX_PAGE = 100, 1000
_DIGEST = re.compile(r"[a-z0-9]+:[0-9a-fA-F]{16,128}")


class EdgeKind(enum.IntEnum):
    """How a version relates to an edge's target (numbers match the protobuf enum)."""

    DERIVED_FROM = 1
    FINE_TUNED_FROM = 2
    DISTILLED_FROM = 3
    TRAINED_ON = 4
    EVALUATED_ON = 5
    PRODUCED_BY = 6
    BUILT_FROM = 7


PARENT_KINDS = frozenset({EdgeKind.DERIVED_FROM, EdgeKind.FINE_TUNED_FROM, EdgeKind.DISTILLED_FROM})
DATASET_KINDS = frozenset({EdgeKind.TRAINED_ON, EdgeKind.EVALUATED_ON})


class Direction(enum.IntEnum):
    UP = 1
    DOWN = 2
    BOTH = 3


@dataclass(frozen=True, slots=True)
class Dataset:
    """A dataset: identified by its digest, or (without one) by its URI."""

    digest: str
    uri: str = ""
    name: str = ""
    version: str = ""

    @property
    def identity(self) -> str:
        """What finds it: the digest, else `uri ` and the URI (a digest has no space)."""
        return self.digest or f"uri {self.uri}"


@dataclass(frozen=True, slots=True)
class Run:
    system: str
    external_id: str
    uri: str = ""
    parameters: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True, slots=True)
class Code:
    repository: str
    commit: str


Node = VersionKey | Dataset | Run | Code


@dataclass(frozen=True, slots=True)
class Edge:
    """A recorded edge; `depth` is its distance from a walk's start (0 outside a walk)."""

    version: VersionKey
    kind: EdgeKind
    target: Node
    depth: int = 0
    creator: str = ""
    create_time: datetime | None = None
    edge_id: int = 0


@dataclass(frozen=True, slots=True)
class Walk:
    """What to walk: from `start`, which way, how far, which kinds; the readable
    namespaces (None: all), and the position to continue after."""

    start: VersionKey | Dataset
    direction: Direction = Direction.UP
    max_depth: int = DEFAULT_DEPTH
    kinds: frozenset[EdgeKind] = frozenset()
    readable: frozenset[str] | None = None
    after: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class LineagePage:
    """One page of a walk, and the aliases now pointing at each version on it."""

    edges: list[Edge]
    aliases: Mapping[VersionKey, tuple[str, ...]]
    next_token: str = ""


class LineageStore(Protocol):
    """Lineage in the system of record."""

    async def add_edges(
        self, *, version: VersionKey, edges: Sequence[tuple[EdgeKind, Node]], actor: str
    ) -> tuple[list[Edge], int]:
        """Record the new edges (with their events); return them and the revision."""
        ...

    async def resolve_version(self, *, ref: Reference) -> VersionKey:
        """The version a reference names (NOT_FOUND if none)."""
        ...

    async def walk(self, *, walk: Walk, limit: int) -> list[Edge]:
        """Edges reached, nearest first, after `walk.after`, at most `limit`."""
        ...

    async def aliases_of(
        self, *, versions: Sequence[VersionKey]
    ) -> dict[VersionKey, tuple[str, ...]]:
        """The aliases pointing at each of these versions now."""
        ...


def check_edge(index: int, kind: int, target: Node | None, version: VersionKey) -> EdgeKind:
    """The edge's kind, if it and its target belong together."""
    where = f"edges[{index}]"
    try:
        edge_kind = EdgeKind(kind)
    except ValueError:
        raise InvalidArgument.field(f"{where}.kind", "a lineage edge kind is required") from None
    if target is None:
        raise InvalidArgument.field(f"{where}.target", "a target node is required")
    wanted: type[Any] = (
        VersionKey if edge_kind in PARENT_KINDS
        else Dataset if edge_kind in DATASET_KINDS
        else Run if edge_kind is EdgeKind.PRODUCED_BY
        else Code
    )  # fmt: skip
    if not isinstance(target, wanted):
        shown = "version" if wanted is VersionKey else wanted.__name__.lower()
        raise InvalidArgument.field(
            f"{where}.target", f"{edge_kind.name.lower()} points at a {shown}"
        )
    if target == version:
        raise InvalidArgument.field(f"{where}.target", "a version cannot be its own parent")
    _check_node(target, f"{where}.target")
    return edge_kind


def _check_node(node: Node, where: str) -> None:
    if isinstance(node, Dataset):
        if node.digest:
            check_digest(node.digest, f"{where}.dataset.digest")
        elif not node.uri:
            raise InvalidArgument.field(f"{where}.dataset", "a dataset needs a digest or a uri")
        _bounded(where + ".dataset", uri=node.uri, name=node.name, version=node.version)
    elif isinstance(node, Run):
        if not node.system or not node.external_id:
            raise InvalidArgument.field(f"{where}.run", "a run needs its system and external_id")
        _bounded(where + ".run", system=node.system, external_id=node.external_id, uri=node.uri)
        if len(node.parameters) > 200:
            raise InvalidArgument.field(f"{where}.run.parameters", "at most 200 parameters")
    elif isinstance(node, Code):
        if not node.repository or not node.commit:
            raise InvalidArgument.field(f"{where}.code", "code needs its repository and commit")
        _bounded(where + ".code", repository=node.repository, commit=node.commit)


def check_digest(digest: str, where: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise InvalidArgument.field(where, "a content digest like sha256:<hex> is required")
    return digest.lower()


def _bounded(where: str, **values: str) -> None:
    for name, value in values.items():
        if len(value) > 1024:
            raise InvalidArgument.field(f"{where}.{name}", "at most 1024 characters")


class Lineage:
    """Recording and walking lineage."""

    def __init__(self, store: LineageStore, *, tokens: PageTokens) -> None:
        self._store = store
        self._tokens = tokens

    async def add(
        self, *, ref: Reference, edges: Sequence[tuple[int, Node | None]], actor: str
    ) -> tuple[list[Edge], int]:
        """Record edges from the version `ref` names; the new ones and the revision."""
        if not 1 <= len(edges) <= MAX_ADD:
            raise InvalidArgument.field("edges", f"give 1 to {MAX_ADD} edges")
        version = await self._store.resolve_version(ref=ref)
        checked = [
            (check_edge(i, kind, target, version), target) for i, (kind, target) in enumerate(edges)
        ]
        for _, target in checked:
            if isinstance(target, VersionKey):  # it must exist; the store reads it in
                await self._store.resolve_version(ref=Reference(target.model, number=target.number))
        return await self._store.add_edges(version=version, edges=checked, actor=actor)  # type: ignore[arg-type]

    async def start_of(self, ref: Reference) -> VersionKey:
        """The version a walk from `ref` starts at."""
        return await self._store.resolve_version(ref=ref)

    async def walk(self, *, walk: Walk, size: int, token: str) -> LineagePage:
        """One page of the edges reached from `walk.start`, nearest first."""
        if not 1 <= walk.max_depth <= MAX_DEPTH:
            raise InvalidArgument.field("max_depth", f"must be 1 to {MAX_DEPTH}")
        limit = min(size or DEFAULT_PAGE, MAX_PAGE)
        if size < 0:
            raise InvalidArgument.field("page_size", "must not be negative")
        bound = {"s": repr(walk.start), "d": int(walk.direction), "m": walk.max_depth,
                 "k": sorted(int(k) for k in walk.kinds)}  # fmt: skip
        after = self._tokens.decode(token, bound, _position)
        found = await self._store.walk(walk=_with(walk, after), limit=limit + 1)
        page = page_of(found, limit, lambda e: self._tokens.encode(bound, [e.depth, e.edge_id]))
        shown = {v for e in page.items for v in _versions_of(e)}
        if isinstance(walk.start, VersionKey):  # every page shows the start node
            shown.add(walk.start)
        versions = sorted(shown, key=lambda k: k.name)
        aliases = await self._store.aliases_of(versions=versions) if versions else {}
        return LineagePage(page.items, aliases, page.next_token)


def _with(walk: Walk, after: tuple[int, int] | None) -> Walk:
    return Walk(walk.start, walk.direction, walk.max_depth, walk.kinds, walk.readable, after)


def _versions_of(edge: Edge) -> list[VersionKey]:
    return [edge.version] + ([edge.target] if isinstance(edge.target, VersionKey) else [])


def _position(value: Any) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise TypeError("position must be [depth, edge]")
    for part in value:
        if not isinstance(part, int) or isinstance(part, bool) or not 0 <= part <= MAX_POSITION:
            raise ValueError("position out of range")
    return value[0], value[1]
