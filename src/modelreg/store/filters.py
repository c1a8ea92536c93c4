"""Filters in PostgreSQL: a filter tree (domain/filters.py) compiled to a WHERE fragment,
over versions joined to their models (`v`, `m`; search.py) or models alone (`m`;
models.py, ListModels' filter).

The SQL text is made only of the fixed fragments below; every value the user wrote, map
keys included, goes in as a `$n` parameter, so no filter can change the statement's
shape. Each comparison is two-valued (COALESCE(..., false)), so NOT means "does not
match" even where a key is missing, as filters.py documents. Equality on labels, params
and metrics is `@>` containment and presence is `?`, which the GIN indexes of migration
0015 answer; times, numbers and run ids have btree indexes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelreg.domain.filters import ORDERED, And, Compare, Filter, Kind, Not, Op, Or
from modelreg.domain.types import VersionState

# A param compares as a number only if it is written as one: digits, a point, an exponent
# (never NaN, Infinity or padding, which float8 would take and sort above every number).
DECIMAL = r"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$"
_COLUMNS = {"name": "m.name", "namespace": "m.ns", "run_id": "v.run_id"}
_MAPS = {Kind.LABEL: "labels", Kind.PARAM: "params", Kind.METRIC: "metrics"}


class Params:
    """The statement's parameters, numbered as they are added (after `first`, those the
    statement's fixed text already numbers)."""

    def __init__(self, first: Sequence[Any] = ()) -> None:
        self.values: list[Any] = list(first)

    def __call__(self, value: Any, cast: str = "") -> str:
        self.values.append(value)
        return f"${len(self.values)}{'::' + cast if cast else ''}"


def compile_filter(tree: Filter | None, params: Params, row: str = "v") -> str:
    """The WHERE fragment of `tree` (TRUE for no filter) on the rows `v` (versions joined
    to their models `m`) or `m` (models alone, ListModels' filter)."""
    if tree is None:
        return "TRUE"
    if isinstance(tree, And):
        return "(" + " AND ".join(compile_filter(t, params, row) for t in tree.terms) + ")"
    if isinstance(tree, Or):
        return "(" + " OR ".join(compile_filter(t, params, row) for t in tree.terms) + ")"
    if isinstance(tree, Not):
        return f"(NOT {compile_filter(tree.term, params, row)})"
    return _compare(tree, params, row)


def _compare(c: Compare, p: Params, row: str) -> str:
    op = c.op.value if c.op is not Op.HAS else "="
    sql_op = "<>" if op == "!=" else op
    column = _MAPS.get(c.kind)
    if column is not None:
        return _map_compare(c, f"{row}.{column}", sql_op, p)
    return _LEAVES[c.kind](c, sql_op, p, row)


def _text(c: Compare, op: str, p: Params, row: str) -> str:
    # equality as it is, so the column's btree answers it; order by code point
    collate = ' COLLATE "C"' if c.op in ORDERED else ""
    return f"({_COLUMNS[c.field]}{collate} {op} {p(c.value, 'text')})"


def _number(c: Compare, op: str, p: Params, row: str) -> str:
    return f"(v.number {op} {p(int(c.value), 'bigint')})"  # type: ignore[arg-type]


def _state_of(c: Compare, op: str, p: Params, row: str) -> str:
    return f"(v.state {op} {p(_state(c.value), 'smallint')})"


def _time(c: Compare, op: str, p: Params, row: str) -> str:
    return f"({row}.{c.field} {op} {p(c.value, 'timestamptz')})"


def _tags(c: Compare, op: str, p: Params, row: str) -> str:
    return f"({row}.tags @> ARRAY[{p(c.value, 'text')}])"


def _alias(c: Compare, op: str, p: Params, row: str) -> str:
    named = "" if c.value is None else f" AND a.alias = {p(c.value, 'text')}"
    if row == "m":  # a model's filter: the alias is on any of its versions
        return f"(EXISTS (SELECT 1 FROM aliases a WHERE a.model_id = m.model_id{named}))"
    return ("(EXISTS (SELECT 1 FROM aliases a WHERE a.model_id = v.model_id"
            f" AND a.number = v.number{named}))")  # fmt: skip


def _dataset(c: Compare, op: str, p: Params, row: str) -> str:
    # not correlated: a hashed set of the versions the dataset fed (computed once from its
    # index, migration 0016), not a probe per version scanned
    return (
        "((v.model_id, v.number) IN (SELECT vds.model_id, vds.number"
        f" FROM version_datasets vds WHERE vds.dataset = {p(c.value, 'text')}))"
    )


def dataset_driver(tree: Filter | None) -> tuple[str, Filter | None] | None:
    """The dataset a page can be read from version_datasets' own order by (a `dataset =`
    that the whole filter requires: the filter itself or a term of its top AND), and the
    rest of the filter; None when no such term exists."""
    if tree is None:
        return None
    terms = tree.terms if isinstance(tree, And) else (tree,)
    for index, term in enumerate(terms):
        if isinstance(term, Compare) and term.kind is Kind.DATASET:
            rest = terms[:index] + terms[index + 1 :]
            return str(term.value), (None if not rest else rest[0] if len(rest) == 1
                                     else And(rest))  # fmt: skip
    return None


_LEAVES = {Kind.TEXT: _text, Kind.NUMBER: _number, Kind.STATE: _state_of, Kind.TIME: _time,
           Kind.TAGS: _tags, Kind.ALIAS: _alias, Kind.DATASET: _dataset}  # fmt: skip


def _map_compare(c: Compare, column: str, sql_op: str, p: Params) -> str:
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


def statement_of(tree: Filter | None) -> tuple[str, Sequence[Any]]:
    """The WHERE fragment and parameters of a filter (for tests and EXPLAIN)."""
    p = Params()
    return compile_filter(tree, p), p.values
