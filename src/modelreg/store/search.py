"""Search in PostgreSQL: a filter tree (domain/filters.py) compiled to SQL.

The SQL text is made only of the fixed fragments below; every value the user wrote, map
keys included, goes in as a `$n` parameter, so no filter can change the statement's
shape. Each comparison is two-valued (COALESCE(..., false)), so NOT means "does not
match" even where a key is missing, as filters.py documents. Equality on labels, params
and metrics is `@>` containment and presence is `?`, which the GIN indexes of migration
0015 answer; times, numbers and run ids have btree indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from modelreg.domain.errors import NotFound
from modelreg.domain.filters import ORDERED, And, Compare, Filter, Kind, Not, Op, Or
from modelreg.domain.names import ModelKey
from modelreg.domain.search import Position, SearchQuery
from modelreg.domain.types import ModelVersion, VersionState
from modelreg.store import rows
from modelreg.store.errors import translated
from modelreg.store.versions import MODEL_ID

# A param compares as a number only if it is written as one: digits, a point, an exponent
# (never NaN, Infinity or padding, which float8 would take and sort above every number).
DECIMAL = r"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$"
_COLUMNS = {"name": "m.name", "namespace": "m.ns", "run_id": "v.run_id"}
_MAPS = {Kind.LABEL: "v.labels", Kind.PARAM: "v.params", Kind.METRIC: "v.metrics"}
_ORDER_KEYS = {"create_time": "v.create_time", "update_time": "v.update_time",
               "number": "v.number"}  # fmt: skip


class _Params:
    """The statement's parameters, numbered as they are added."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any, cast: str = "") -> str:
        self.values.append(value)
        return f"${len(self.values)}{'::' + cast if cast else ''}"


def compile_filter(tree: Filter | None, params: _Params) -> str:
    """The WHERE fragment of `tree` (TRUE for no filter)."""
    if tree is None:
        return "TRUE"
    if isinstance(tree, And):
        return "(" + " AND ".join(compile_filter(t, params) for t in tree.terms) + ")"
    if isinstance(tree, Or):
        return "(" + " OR ".join(compile_filter(t, params) for t in tree.terms) + ")"
    if isinstance(tree, Not):
        return f"(NOT {compile_filter(tree.term, params)})"
    return _compare(tree, params)


def _compare(c: Compare, p: _Params) -> str:
    op = c.op.value if c.op is not Op.HAS else "="
    sql_op = "<>" if op == "!=" else op
    column = _MAPS.get(c.kind)
    if column is not None:
        return _map_compare(c, column, sql_op, p)
    return _LEAVES[c.kind](c, sql_op, p)


def _text(c: Compare, op: str, p: _Params) -> str:
    # equality as it is, so the column's btree answers it; order by code point
    collate = ' COLLATE "C"' if c.op in ORDERED else ""
    return f"({_COLUMNS[c.field]}{collate} {op} {p(c.value, 'text')})"


def _number(c: Compare, op: str, p: _Params) -> str:
    return f"(v.number {op} {p(int(c.value), 'bigint')})"  # type: ignore[arg-type]


def _state_of(c: Compare, op: str, p: _Params) -> str:
    return f"(v.state {op} {p(_state(c.value), 'smallint')})"


def _time(c: Compare, op: str, p: _Params) -> str:
    return f"(v.{c.field} {op} {p(c.value, 'timestamptz')})"


def _tags(c: Compare, op: str, p: _Params) -> str:
    return f"(v.tags @> ARRAY[{p(c.value, 'text')}])"


def _alias(c: Compare, op: str, p: _Params) -> str:
    named = "" if c.value is None else f" AND a.alias = {p(c.value, 'text')}"
    return ("(EXISTS (SELECT 1 FROM aliases a WHERE a.model_id = v.model_id"
            f" AND a.number = v.number{named}))")  # fmt: skip


def _dataset(c: Compare, op: str, p: _Params) -> str:
    # not correlated: a hashed set of the versions the dataset fed (computed once, and a
    # semi-join when the planner can), not a probe per version scanned
    named = p(c.value, "text")
    return ("((v.model_id, v.number) IN (SELECT vn.model_id, vn.number FROM lineage_nodes d"
            " JOIN lineage_edges e ON e.to_node = d.node_id AND e.kind IN (4, 5)"
            " JOIN lineage_nodes vn ON vn.node_id = e.from_node"
            f" WHERE d.kind = 2 AND (d.identity = {named} OR d.uri = {named})))")  # fmt: skip


_LEAVES = {Kind.TEXT: _text, Kind.NUMBER: _number, Kind.STATE: _state_of, Kind.TIME: _time,
           Kind.TAGS: _tags, Kind.ALIAS: _alias, Kind.DATASET: _dataset}  # fmt: skip


def _map_compare(c: Compare, column: str, sql_op: str, p: _Params) -> str:
    key = p(c.key, "text")
    if c.value is None:  # presence
        return f"({column} ? {key})"
    numeric = isinstance(c.value, float)
    if sql_op == "=" and not (c.kind is Kind.PARAM and numeric):
        cast = "float8" if numeric else "text"
        return f"({column} @> jsonb_build_object({key}, {p(c.value, cast)}))"
    if not numeric:
        return f'COALESCE(({column} ->> {key}) COLLATE "C" {sql_op} {p(c.value, "text")}, false)'
    value = f"({column} ->> {key})"
    if c.kind is Kind.PARAM:  # a param that is not a plain decimal compares false
        number = p(c.value, "float8")
        return (f"COALESCE(CASE WHEN {value} ~ '{DECIMAL}'"
                f" THEN {value}::float8 {sql_op} {number} END, false)")  # fmt: skip
    return f"COALESCE({value}::float8 {sql_op} {p(c.value, 'float8')}, false)"


def _state(value: Any) -> int:
    assert isinstance(value, VersionState)
    return int(value.value)


def order_expression(order: str, key: str | None, params: _Params) -> str:
    """The sort value of an order (`metrics.<key>` by its number)."""
    if order == "metrics":
        return f"(v.metrics ->> {params(key, 'text')})::float8"
    return _ORDER_KEYS[order]


class PostgresSearch:
    """The VersionSearch port, on the reader's pool."""

    _pool: asyncpg.Pool

    async def search_versions(self, *, query: SearchQuery, limit: int) -> list[SearchHit]:
        p = _Params()
        where = [compile_filter(query.filter, p), "m.delete_time IS NULL"]
        if query.namespaces is not None:
            where.append(f"m.ns = ANY({p(sorted(query.namespaces), 'text[]')})")
        if query.model is not None:  # the model's id as one value (an InitPlan), so its
            # primary key answers in order and the scan stops at the page (a join's
            # model_id would be sorted whole: 1.2 s against 0.6 ms at 1M versions)
            ns, name = p(query.model.namespace, "text"), p(query.model.model, "text")
            where.append(f"v.model_id = (SELECT model_id FROM models WHERE ns = {ns}"
                         f" AND name = {name})")  # fmt: skip
        if query.states:
            where.append(f"v.state = ANY({p([int(s) for s in query.states], 'smallint[]')})")
        sort = order_expression(query.order, query.order_key, p)
        if query.order == "metrics":
            where.append(f"v.metrics ? {p(query.order_key, 'text')}")
        direction, compare = ("DESC", "<") if query.descending else ("ASC", ">")
        if query.after is not None:
            value, model_id, number = query.after
            cast = {"create_time": "timestamptz", "update_time": "timestamptz"}.get(
                query.order, "bigint" if query.order == "number" else "float8"
            )
            after_value = datetime.fromisoformat(value) if cast == "timestamptz" else value
            if query.model is None:
                where.append(
                    f"({sort}, v.model_id, v.number) {compare}"
                    f" ({p(after_value, cast)}, {p(model_id, 'bigint')}, {p(number, 'bigint')})"
                )
            elif query.order == "number":
                where.append(f"v.number {compare} {p(number, 'bigint')}")
            else:
                where.append(f"({sort}, v.number) {compare} ({p(after_value, cast)},"
                             f" {p(number, 'bigint')})")  # fmt: skip
        tiebreak = "v.model_id {d}, v.number {d}" if query.model is None else "v.number {d}"
        sql = (
            f"SELECT m.ns, m.name, v.model_id, {sort} AS sort_value, {rows.VERSION_COLUMNS}"
            " FROM model_versions v JOIN models m ON m.model_id = v.model_id"
            f" WHERE {' AND '.join(where)}"
            f" ORDER BY sort_value {direction}, {tiebreak.format(d=direction)}"
            f" LIMIT {p(limit, 'bigint')}"
        )
        async with translated():
            found = await self._pool.fetch(sql, *p.values)
            if not found and query.model is not None:  # none match, or no such model?
                model = query.model
                if await self._pool.fetchval(MODEL_ID, model.namespace, model.model) is None:
                    raise NotFound(model.name)
        return [_hit(row) for row in found]


SearchHit = tuple[ModelVersion, Position]  # a version and its keyset position


def _hit(row: asyncpg.Record) -> SearchHit:
    sort = row["sort_value"]
    position = sort.isoformat() if isinstance(sort, datetime) else sort
    version = rows.version(ModelKey(row["ns"], row["name"]), row)
    return version, (position, row["model_id"], row["number"])


def statement_of(tree: Filter | None) -> tuple[str, Sequence[Any]]:
    """The WHERE fragment and parameters of a filter (for tests and EXPLAIN)."""
    p = _Params()
    return compile_filter(tree, p), p.values
