"""Lineage in PostgreSQL (migrations/0014_lineage.sql): nodes found by identity, edges
recorded with their events in one transaction, walks as bounded recursive CTEs."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from modelreg.domain import consistency
from modelreg.domain.errors import InvalidArgument, NotFound
from modelreg.domain.events import Event, EventKind
from modelreg.domain.lineage import (
    PARENT_KINDS,
    Code,
    Dataset,
    Direction,
    Edge,
    EdgeKind,
    Node,
    Run,
    Walk,
)
from modelreg.domain.names import ModelKey, Reference, VersionKey
from modelreg.domain.types import ModelVersion
from modelreg.store import changelog
from modelreg.store.errors import translated
from modelreg.store.events import INSERT_EVENT

VERSION, DATASET, RUN, CODE = 1, 2, 3, 4
# Parent edges are checked and written under this one transaction-level advisory lock, so
# two edges that together would close a cycle never both commit. Other edges skip it.
PARENT_LOCK = 0x6C696E65  # "line"
_PARENTS = sorted(int(k) for k in PARENT_KINDS)

_VERSION_NODE = """
WITH m AS (SELECT model_id FROM models WHERE ns = $1 AND name = $2)
INSERT INTO lineage_nodes (kind, model_id, number)
SELECT 1, m.model_id, $3 FROM m
ON CONFLICT (model_id, number) WHERE kind = 1 DO UPDATE SET kind = 1
RETURNING node_id
"""
_NODE = """
INSERT INTO lineage_nodes (kind, identity, uri, name, version, attributes)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (kind, identity) WHERE kind <> 1 DO UPDATE SET kind = EXCLUDED.kind
RETURNING node_id
"""
_EDGE = """
INSERT INTO lineage_edges (from_node, kind, to_node, creator) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING RETURNING edge_id, create_time
"""
# Is $2 an ancestor-or-self of $1 through parent edges? (the walk ends: UNION keeps nodes once)
_REACHES = """
WITH RECURSIVE up(node) AS (
    SELECT $1::bigint
    UNION
    SELECT e.to_node FROM lineage_edges e JOIN up ON e.from_node = up.node
    WHERE e.kind = ANY($3::smallint[])
)
SELECT EXISTS (SELECT 1 FROM up WHERE node = $2)
"""
_START_VERSION = """
SELECT n.node_id FROM lineage_nodes n JOIN models m ON m.model_id = n.model_id
WHERE n.kind = 1 AND m.ns = $1 AND m.name = $2 AND n.number = $3
"""
_DATASET_BY_DIGEST = "SELECT node_id FROM lineage_nodes WHERE kind = 2 AND identity = $1"
_DATASETS_AT = "SELECT node_id FROM lineage_nodes WHERE kind = 2 AND uri = $1 ORDER BY node_id"
# May the walk enter node `{node}`? Versions only in readable namespaces ($3; NULL: all).
_ENTER = """EXISTS (SELECT 1 FROM lineage_nodes n LEFT JOIN models m ON m.model_id = n.model_id
    WHERE n.node_id = {node} AND (n.kind <> 1 OR $3::text[] IS NULL OR m.ns = ANY($3)))"""
_KINDS = "($4::smallint[] IS NULL OR e.kind = ANY($4))"
# One direction's walk: {near} is the column of the node the walk stands on, {far} the
# node an edge leads to. UNION keeps each (edge, node, depth) once; depth is bounded by $2.
_DIRECTION = f"""
SELECT e.edge_id, e.{{far}} AS node, 1 AS depth FROM lineage_edges e
WHERE e.{{near}} = ANY($1::bigint[]) AND {_KINDS} AND {_ENTER.format(node="e.{far}")}
UNION
SELECT e.edge_id, e.{{far}}, w.depth + 1 FROM {{walk}} w
JOIN lineage_edges e ON e.{{near}} = w.node
WHERE w.depth < $2 AND {_KINDS} AND {_ENTER.format(node="e.{far}")}
"""
_DETAILS = """
SELECT r.depth, e.edge_id, e.kind, e.creator, e.create_time,
       fm.ns AS from_ns, fm.name AS from_model, f.number AS from_number,
       t.kind AS t_kind, tm.ns AS t_ns, tm.name AS t_model, t.number AS t_number,
       t.identity, t.uri, t.name AS t_name, t.version AS t_version, t.attributes
FROM reached r
JOIN lineage_edges e ON e.edge_id = r.edge_id
JOIN lineage_nodes f ON f.node_id = e.from_node JOIN models fm ON fm.model_id = f.model_id
JOIN lineage_nodes t ON t.node_id = e.to_node LEFT JOIN models tm ON tm.model_id = t.model_id
WHERE (r.depth, e.edge_id) > ($5, $6)
ORDER BY r.depth, e.edge_id LIMIT $7
"""
_ALIASES = """
SELECT m.ns, m.name, a.number, a.alias FROM aliases a JOIN models m ON m.model_id = a.model_id
JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS v(ns, name, number)
  ON m.ns = v.ns AND m.name = v.name AND a.number = v.number
ORDER BY a.alias
"""


def _walk_sql(direction: Direction) -> str:
    up = _DIRECTION.format(near="from_node", far="to_node", walk="walk_up")
    down = _DIRECTION.format(near="to_node", far="from_node", walk="walk_down")
    ctes = {
        Direction.UP: [f"walk_up(edge_id, node, depth) AS ({up})"],
        Direction.DOWN: [f"walk_down(edge_id, node, depth) AS ({down})"],
        Direction.BOTH: [f"walk_up(edge_id, node, depth) AS ({up})",
                         f"walk_down(edge_id, node, depth) AS ({down})"],
    }[direction]  # fmt: skip
    walks = [c.split("(", 1)[0] for c in ctes]
    union = " UNION ALL ".join(f"SELECT edge_id, depth FROM {w}" for w in walks)
    reached = f"reached AS (SELECT edge_id, min(depth) AS depth FROM ({union}) u GROUP BY edge_id)"
    return f"WITH RECURSIVE {', '.join(ctes)}, {reached} {_DETAILS}"


_WALKS = {direction: _walk_sql(direction) for direction in Direction}
Resolve = Callable[..., Awaitable[ModelVersion]]


class PostgresLineageStore:
    """The LineageStore port (domain/lineage.py)."""

    def __init__(self, pool: asyncpg.Pool, *, resolve: Resolve) -> None:
        self._pool = pool
        self._resolve = resolve  # the reader's resolve(ref=...), for references

    async def resolve_version(self, *, ref: Reference) -> VersionKey:
        version = await self._resolve(ref=ref)
        return version.key

    async def add_edges(
        self, *, version: VersionKey, edges: Sequence[tuple[EdgeKind, Node]], actor: str
    ) -> tuple[list[Edge], int]:
        added: list[Edge] = []
        events: list[Event] = []
        async with translated(), self._pool.acquire() as conn, conn.transaction():
            if any(kind in PARENT_KINDS for kind, _ in edges):
                await conn.execute("SELECT pg_advisory_xact_lock($1)", PARENT_LOCK)
            source = await _node_id(conn, version)
            for index, (kind, target) in enumerate(edges):
                node = await _node_id(conn, target)
                if kind in PARENT_KINDS and await conn.fetchval(_REACHES, node, source, _PARENTS):
                    raise InvalidArgument.field(
                        f"edges[{index}].target",
                        f"{_describe(target)} descends from {version.name}: the edge would "
                        "make a version its own ancestor",
                    )
                row = await conn.fetchrow(_EDGE, source, int(kind), node, actor)
                if row is None:
                    continue  # recorded already: a fact is added once
                edge = Edge(version, kind, target, 0, actor, row["create_time"], row["edge_id"])
                added.append(edge)
                events.append(_event(edge))
            revision = await _append(conn, events) if events else 0
        if revision:
            consistency.committed(revision)  # else the response answers the head
        return added, revision

    async def walk(self, *, walk: Walk, limit: int) -> list[Edge]:
        kinds = sorted(int(k) for k in walk.kinds) or None
        readable = sorted(walk.readable) if walk.readable is not None else None
        after = walk.after or (0, 0)
        async with translated(), self._pool.acquire() as conn:
            start = await _start_of(conn, walk.start)
            if not start:
                if isinstance(walk.start, Dataset):
                    named = walk.start.digest or walk.start.uri
                    raise NotFound(named, message=f"no lineage names dataset {named}")
                return []  # a version nothing was recorded about
            rows = await conn.fetch(
                _WALKS[walk.direction], start, walk.max_depth, readable, kinds, *after, limit
            )
        return [_edge(row) for row in rows]

    async def aliases_of(
        self, *, versions: Sequence[VersionKey]
    ) -> dict[VersionKey, tuple[str, ...]]:
        columns = ([v.model.namespace for v in versions], [v.model.model for v in versions],
                   [v.number for v in versions])  # fmt: skip
        async with translated():
            rows = await self._pool.fetch(_ALIASES, *columns)
        found: dict[VersionKey, list[str]] = {}
        for row in rows:
            key = VersionKey(ModelKey(row["ns"], row["name"]), row["number"])
            found.setdefault(key, []).append(row["alias"])
        return {key: tuple(aliases) for key, aliases in found.items()}


async def _node_id(conn: asyncpg.Connection, node: Node) -> int:
    if isinstance(node, VersionKey):
        found = await conn.fetchval(
            _VERSION_NODE, node.model.namespace, node.model.model, node.number
        )
        if found is None:
            raise NotFound(node.name)
        return int(found)
    if isinstance(node, Dataset) and not node.digest:  # found by URI: the earliest there
        found = await conn.fetchval(_DATASETS_AT + " LIMIT 1", node.uri)
        if found is not None:
            return int(found)
    kind, identity, uri, name, version, attributes = _columns(node)
    return int(await conn.fetchval(_NODE, kind, identity, uri, name, version, attributes))


def _columns(node: Node) -> tuple[int, str, str, str, str, str]:
    if isinstance(node, Dataset):
        return DATASET, node.identity, node.uri, node.name, node.version, "{}"
    if isinstance(node, Run):
        params = json.dumps(dict(node.parameters), sort_keys=True)
        return RUN, json.dumps([node.system, node.external_id]), node.uri, "", "", params
    assert isinstance(node, Code)
    return CODE, json.dumps([node.repository, node.commit]), "", "", "", "{}"


async def _start_of(conn: asyncpg.Connection, start: VersionKey | Dataset) -> list[int]:
    """The nodes a walk starts from: a version's, a digest's, or every dataset at a URI."""
    if isinstance(start, Dataset):
        if not start.digest:
            return [int(row[0]) for row in await conn.fetch(_DATASETS_AT, start.uri)]
        found = await conn.fetchval(_DATASET_BY_DIGEST, start.digest)
    else:
        found = await conn.fetchval(
            _START_VERSION, start.model.namespace, start.model.model, start.number
        )
    return [] if found is None else [int(found)]


def _edge(row: asyncpg.Record) -> Edge:
    version = VersionKey(ModelKey(row["from_ns"], row["from_model"]), row["from_number"])
    return Edge(version, EdgeKind(row["kind"]), _target(row), row["depth"], row["creator"],
                row["create_time"], row["edge_id"])  # fmt: skip


def _target(row: asyncpg.Record) -> Node:
    kind = row["t_kind"]
    if kind == VERSION:
        return VersionKey(ModelKey(row["t_ns"], row["t_model"]), row["t_number"])
    if kind == DATASET:
        identity = row["identity"]
        digest = "" if identity.startswith("uri ") else identity
        return Dataset(digest, row["uri"], row["t_name"], row["t_version"])
    first, second = json.loads(row["identity"])
    if kind == RUN:
        attributes = row["attributes"]
        params = json.loads(attributes) if isinstance(attributes, str) else dict(attributes)
        return Run(first, second, row["uri"], params)
    return Code(first, second)


def _describe(node: Node) -> str:
    return node.name if isinstance(node, VersionKey) else repr(node)


def snapshot_of(edge: Edge) -> dict[str, Any]:
    """The event's `after`: the edge's kind and its target, as stored."""
    target: dict[str, Any]
    if isinstance(edge.target, VersionKey):
        target = {"version": edge.target.name}
    elif isinstance(edge.target, Dataset):
        t = edge.target
        target = {
            "dataset": {"digest": t.digest, "uri": t.uri, "name": t.name, "version": t.version}
        }
    elif isinstance(edge.target, Run):
        t2 = edge.target
        target = {"run": {"system": t2.system, "external_id": t2.external_id, "uri": t2.uri,
                          "parameters": dict(t2.parameters)}}  # fmt: skip
    else:
        target = {"code": {"repository": edge.target.repository, "commit": edge.target.commit}}
    return {"kind": edge.kind.name.lower(), "target": target}


def _event(edge: Edge) -> Event:
    return Event(EventKind.LINEAGE_ADDED, edge.version, edge.creator, after=snapshot_of(edge),
                 latest_moved=False)  # fmt: skip


async def _append(conn: asyncpg.Connection, events: list[Event]) -> int:
    for event in events:
        model = event.model.model if event.model else ""
        await conn.execute(INSERT_EVENT, event.namespace, model, event.resource, event.kind,
                           event.actor, event.before, event.after)  # fmt: skip
    return await changelog.stamp(conn, events)
