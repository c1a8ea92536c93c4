"""The registry's aggregates, bundled for the transport layer."""

from __future__ import annotations

from dataclasses import dataclass

from modelreg.domain.aliases import Aliases
from modelreg.domain.lookups import DirectLookups, Lookups
from modelreg.domain.models import Models
from modelreg.domain.namespaces import Namespaces
from modelreg.domain.ports import EncodedReader, Encoder, Store
from modelreg.domain.versions import Versions


@dataclass(frozen=True)
class Registry:
    """Every use case of the registry, each behind its aggregate."""

    namespaces: Namespaces
    models: Models
    versions: Versions
    aliases: Aliases
    lookups: Lookups

    @classmethod
    def on(cls, store: Store, *, encoder: Encoder, cached: EncodedReader | None = None) -> Registry:
        """Wire the aggregates to a store; lookups go through `cached` unless STRONG."""
        direct = DirectLookups(store=store, encoder=encoder)
        return cls(
            namespaces=Namespaces(store),
            models=Models(store),
            versions=Versions(store),
            aliases=Aliases(store),
            lookups=Lookups(cached=cached or direct, direct=direct),
        )
