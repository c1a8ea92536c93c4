"""Searching versions: a filter (domain/filters.py) and an order, across the registry
(SearchModelVersions, limited to the namespaces the caller may read) or within one
model (ListModelVersions with a filter), a keyset page at a time.

Pages are keyset: the position is (sort value, model id, number), the last two breaking
ties, so a page starts strictly after the previous one's last row and each match is
returned once while rows are inserted. Orders on values that never change
(`create_time`, `number`) keep that under updates too; `update_time` and
`metrics.<key>` orders may move a row that changes between two pages (it is then seen
twice or not at all), as any keyset listing on a mutable key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from modelreg.domain.errors import InvalidArgument
from modelreg.domain.filters import Filter, fingerprint, parse
from modelreg.domain.names import ModelKey
from modelreg.domain.paging import MAX_POSITION, PageTokens, page_of, page_size
from modelreg.domain.types import ModelVersion, Page, VersionState

ORDERS = ("create_time", "update_time", "number", "metrics.<key>")
Position = tuple[Any, int, int]  # sort value, model_id, number


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """What to match, in which order, where, and the position to continue after."""

    filter: Filter | None
    order: str = "create_time"  # create_time | update_time | number | metrics
    order_key: str | None = None  # the metric's key
    descending: bool = True
    model: ModelKey | None = None  # within one model, else the registry
    namespaces: frozenset[str] | None = None  # the readable ones; None: all
    states: tuple[VersionState, ...] = ()  # ListModelVersions' `states`; empty: all
    after: Position | None = None


class VersionSearch(Protocol):
    """The store's search: the matches of `query` after its position, `limit` of them."""

    async def search_versions(
        self, *, query: SearchQuery, limit: int
    ) -> list[tuple[ModelVersion, Position]]: ...


def parse_order(text: str, default: str) -> tuple[str, str | None, bool]:
    """`field [asc|desc]` -> (field, metric key, descending): ascending unless `desc`,
    as AIP-132 has it; an empty order is `default`."""
    words = (text.strip() or default).split()
    field = words[0] if words else ""
    direction = words[1].lower() if len(words) == 2 else "asc"
    key = None
    if field.startswith("metrics.") and len(field) > len("metrics."):
        field, key = "metrics", field[len("metrics.") :]
    if (
        field not in ("create_time", "update_time", "number", "metrics")
        or len(words) > 2
        or (direction not in ("asc", "desc"))
    ):
        raise InvalidArgument.field(
            "order_by", f"must be one of {', '.join(ORDERS)}, then optionally asc or desc"
        )
    return field, key, direction == "desc"


class Search:
    """Filtered, ordered, paged version searches."""

    def __init__(self, store: VersionSearch, *, tokens: PageTokens) -> None:
        self._store = store
        self._tokens = tokens

    async def versions(
        self,
        *,
        filter_text: str,
        order_by: str,
        size: int,
        token: str,
        model: ModelKey | None = None,
        namespaces: frozenset[str] | None = None,
        states: tuple[VersionState, ...] = (),
    ) -> Page[ModelVersion]:
        """One page of the versions matching `filter_text` (AIP-160, filters.py)."""
        tree = parse(filter_text)
        order, key, descending = parse_order(
            order_by, "number desc" if model else "create_time desc"
        )
        states = tuple(sorted(set(states)))
        query = SearchQuery(tree, order, key, descending, model, namespaces, states)
        limit = page_size(size)
        # the readable namespaces are applied afresh on every page, not bound to the token
        bound = {
            "q": fingerprint(tree),
            "o": [order, key, descending],
            "m": model.name if model else "",
            "s": [int(s) for s in states],
        }
        after = self._tokens.decode(token, bound, _position_shape(order))
        query = dataclasses.replace(query, after=after)
        hits = await self._store.search_versions(query=query, limit=limit + 1)
        page = page_of(hits, limit, lambda hit: self._tokens.encode(bound, list(hit[1])))
        return Page([version for version, _ in page.items], page.next_token)


def _position_shape(order: str) -> Any:
    def shape(value: Any) -> Position:
        if not isinstance(value, list) or len(value) != 3:
            raise TypeError("position must be [value, model, number]")
        sort, model_id, number = value
        for part in (model_id, number):
            if not isinstance(part, int) or isinstance(part, bool) or not 0 <= part <= MAX_POSITION:
                raise ValueError("position out of range")
        if order in ("create_time", "update_time"):
            if not isinstance(sort, str) or "\0" in sort:
                raise TypeError("a time position is a string")
        elif order == "number":
            if not isinstance(sort, int) or isinstance(sort, bool):
                raise TypeError("a number position is an integer")
        elif not isinstance(sort, int | float) or isinstance(sort, bool):
            raise TypeError("a metric position is a number")
        return sort, model_id, number

    return shape
