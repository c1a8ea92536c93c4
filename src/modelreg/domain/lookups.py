"""The hot lookups: references to versions, one or a thousand at a time."""

from __future__ import annotations

from collections.abc import Sequence

from modelreg.domain.errors import InvalidArgument, RegistryError
from modelreg.domain.names import Reference, VersionKey, parse_reference
from modelreg.domain.ports import Reader
from modelreg.domain.types import ModelVersion

MAX_BATCH = 1000


class Lookups:
    """Resolve references through a (possibly cached) reader, or the store when STRONG."""

    def __init__(self, *, cached: Reader, store: Reader) -> None:
        self._cached = cached
        self._store = store

    async def resolve(self, *, ref: Reference, strong: bool = False) -> ModelVersion:
        """The version a reference points to."""
        return await self._reader(strong).resolve(ref=ref)

    async def get(self, *, key: VersionKey, strong: bool = False) -> ModelVersion:
        """One version by key."""
        return await self._reader(strong).get_version(key=key)

    async def batch(
        self, *, refs: Sequence[str], strong: bool = False
    ) -> list[ModelVersion | RegistryError]:
        """Resolve each reference; a bad or missing one yields its error in its place."""
        if len(refs) > MAX_BATCH:
            raise InvalidArgument.field(
                "references", f"at most {MAX_BATCH} references, got {len(refs)}"
            )
        results: list[ModelVersion | RegistryError] = []
        parsed: list[Reference] = []
        for index, text in enumerate(refs):
            try:
                parsed.append(parse_reference(text, f"references[{index}]"))
                results.append(_PENDING)
            except InvalidArgument as exc:
                results.append(exc)
        found = iter(await self._reader(strong).resolve_many(refs=parsed) if parsed else [])
        return [next(found) if r is _PENDING else r for r in results]

    def _reader(self, strong: bool) -> Reader:
        return self._store if strong else self._cached


_PENDING = RegistryError("pending")  # placeholder for a reference still being resolved
