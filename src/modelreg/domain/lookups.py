"""The hot lookups: references to versions, one or a thousand at a time, answered
with encoded bytes from the caches, or from the system of record when STRONG."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from modelreg.domain.errors import InvalidArgument, RegistryError
from modelreg.domain.names import ModelKey, Reference, VersionKey, parse_reference
from modelreg.domain.ports import EncodedReader, Encoder, ModelReads, VersionReads

MAX_BATCH = 1000


class LookupSource(ModelReads, VersionReads, Protocol):
    """The store as the direct lookups use it."""


class DirectLookups:
    """The EncodedReader without caches: the store, then the encoder."""

    def __init__(self, *, store: LookupSource, encoder: Encoder) -> None:
        self._store = store
        self._encoder = encoder

    async def resolve_encoded(self, *, refs: Sequence[Reference]) -> list[bytes | RegistryError]:
        found = await self._store.resolve_many(refs=refs)
        return [r if isinstance(r, RegistryError) else self._encoder.version(r) for r in found]

    async def model_encoded(self, *, key: ModelKey) -> bytes:
        return self._encoder.model(await self._store.get_model(key=key))


class Lookups:
    """Route each lookup to the cached reader, or to the direct one when STRONG."""

    def __init__(self, *, cached: EncodedReader, direct: EncodedReader) -> None:
        self._cached = cached
        self._direct = direct

    async def resolve(self, *, ref: Reference, strong: bool = False) -> bytes:
        """The encoded version a reference points to."""
        (found,) = await self._reader(strong).resolve_encoded(refs=[ref])
        if isinstance(found, RegistryError):
            raise found
        return found

    async def get(self, *, key: VersionKey, strong: bool = False) -> bytes:
        """One encoded version by key."""
        return await self.resolve(ref=Reference(key.model, number=key.number), strong=strong)

    async def model(self, *, key: ModelKey, strong: bool = False) -> bytes:
        """One encoded model, soft-deleted ones included."""
        return await self._reader(strong).model_encoded(key=key)

    async def batch(
        self,
        *,
        refs: Sequence[str],
        strong: bool = False,
        refused: Callable[[Reference], RegistryError | None] | None = None,
    ) -> list[bytes | RegistryError]:
        """Resolve each reference; a bad or missing one yields its error in its place, and
        so does one that `refused` refuses (the caller may not read its namespace: it is
        never looked up, so the answer says nothing of whether it exists)."""
        if len(refs) > MAX_BATCH:
            raise InvalidArgument.field(
                "references", f"at most {MAX_BATCH} references, got {len(refs)}"
            )
        results: list[bytes | RegistryError | None] = []
        parsed: list[Reference] = []
        for index, text in enumerate(refs):
            try:
                ref = parse_reference(text, f"references[{index}]")
            except InvalidArgument as exc:
                results.append(exc)
                continue
            denial = refused(ref) if refused is not None else None
            if denial is None:
                parsed.append(ref)
            results.append(denial)
        found = iter(await self._reader(strong).resolve_encoded(refs=parsed) if parsed else [])
        return [next(found) if r is None else r for r in results]

    def _reader(self, strong: bool) -> EncodedReader:
        return self._direct if strong else self._cached
