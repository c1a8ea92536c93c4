"""The registry's aggregates, bundled for the transport layer."""

from __future__ import annotations

from dataclasses import dataclass

from modelreg.domain.aliases import Aliases
from modelreg.domain.lookups import DirectLookups, Lookups
from modelreg.domain.models import Models
from modelreg.domain.namespaces import Namespaces
from modelreg.domain.paging import PageTokens
from modelreg.domain.ports import EncodedReader, Encoder, Store
from modelreg.domain.search import Search, VersionSearch
from modelreg.domain.versions import Versions


@dataclass(frozen=True)
class Registry:
    """Every use case of the registry, each behind its aggregate."""

    namespaces: Namespaces
    models: Models
    versions: Versions
    aliases: Aliases
    lookups: Lookups
    search: Search | None = None  # filtered searches (the PostgreSQL store has them)

    @classmethod
    def on(
        cls,
        store: Store,
        *,
        encoder: Encoder,
        cached: EncodedReader | None = None,
        tokens: PageTokens | None = None,
        search: VersionSearch | None = None,
    ) -> Registry:
        """Wire the aggregates to a store; lookups go through `cached` unless STRONG. Page
        tokens are signed with `tokens` (by default a key of this process only); `search`
        answers filtered listings (usually the store itself)."""
        direct = DirectLookups(store=store, encoder=encoder)
        tokens = tokens or PageTokens.ephemeral()
        return cls(
            namespaces=Namespaces(store, tokens=tokens),
            models=Models(store, tokens=tokens),
            versions=Versions(store, tokens=tokens),
            aliases=Aliases(store, tokens=tokens),
            lookups=Lookups(cached=cached or direct, direct=direct),
            search=Search(search, tokens=tokens) if search is not None else None,
        )
