"""The tiered EncodedReader: L1, then L2, then PostgreSQL, filling back up.

Each lookup walks a model's entries (state, then pointer, then version); an
entry missing at one tier sends the whole lookup to the next. Writers call
`CacheInvalidator` after commit: it drops the stale keys from this process's
L1 at once and from L2 (and, through pub/sub, every other process's L1)
before the write is acknowledged.

A lookup carrying a consistency token (domain/consistency.py) skips L1 unless this
process's follower has applied the token's revision, and skips L2 unless L2's
watermark (cache/remote.py, _FOLLOW) is at or above it. An L1 fill from L2 needs the
watermark at the follower's revision, read before the lookup began: otherwise L2 could
hand L1 an entry older than a change the follower has already dropped, and nothing
would drop it again. For the same reason a database read that fills the caches must
reflect the follower's revision and L2's watermark: a read replica that has not
replayed that far sends it to the primary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from modelreg import tracing
from modelreg.cache import keys, values
from modelreg.cache.local import LocalCache
from modelreg.cache.remote import RedisCache, RedisUnavailable
from modelreg.cache.stats import CacheStats
from modelreg.domain.consistency import Plan, ReplicaHead, current_plan, lookup_plan
from modelreg.domain.errors import NotFound, RegistryError
from modelreg.domain.events import Event
from modelreg.domain.names import ModelKey, Reference
from modelreg.domain.ports import Encoder, Reader
from modelreg.domain.types import ModelVersion

Getter = Callable[[str], bytes | None]
Entries = list[tuple[str, bytes]]


def walk(ref: Reference, get: Getter) -> bytes | None:
    """The final entry of a lookup (a version or an error), or None on any missing entry."""
    state = get(keys.state_key(ref.model))
    if state is None or state != values.ACTIVE:
        return state
    number = ref.number
    pointer = keys.pointer_of(ref)
    if pointer is not None:
        target = get(pointer)
        if target is None or values.is_negative(target):
            return target
        number = int(target[1:])
    return get(keys.version_key(ref.model, number))  # type: ignore[arg-type]


def entries_of(ref: Reference, found: ModelVersion | RegistryError, encoder: Encoder) -> Entries:
    """The entries a database answer fills, so the next walk of `ref` hits."""
    if isinstance(found, RegistryError):
        return _error_entries(ref, found)
    entries = [(keys.state_key(ref.model), values.ACTIVE)]
    pointer = keys.pointer_of(ref)
    if pointer is not None:
        entries.append((pointer, values.hit(str(found.key.number).encode())))
    entries.append(
        (keys.version_key(ref.model, found.key.number), values.hit(encoder.version(found)))
    )
    return entries


def _error_entries(ref: Reference, exc: RegistryError) -> Entries:
    entry = values.error_entry(exc)
    if entry is None:
        return []  # not cacheable (e.g. the database is down)
    about_model = exc.metadata.get("resource") == ref.model.name
    if about_model and exc.reason != "NO_READY_VERSION":  # missing or deleted model
        return [(keys.state_key(ref.model), entry)]
    level = keys.pointer_of(ref) or keys.version_key(ref.model, ref.number or 0)
    return [(keys.state_key(ref.model), values.ACTIVE), (level, entry)]


def result_of(entry: bytes) -> bytes | RegistryError:
    """A final entry as the caller sees it: the encoded version, or the error."""
    if entry[:1] == values.HIT:
        return entry[1:]
    return values.error_of(entry)


class TieredLookups:
    """EncodedReader over L1 (optional), L2 (optional) and the store."""

    def __init__(
        self,
        *,
        store: Reader,
        encoder: Encoder,
        local: LocalCache | None,
        remote: RedisCache | None,
        stats: CacheStats,
        followed: Callable[[], int] = lambda: -1,
        replica: ReplicaHead | None = None,
    ) -> None:
        self._store = store
        self._encoder = encoder
        self._local = local
        self._remote = remote
        self._stats = stats
        self._followed = followed  # the revision this process's follower has applied
        self._replica = replica  # what the store's read replica has replayed, if it has one

    async def resolve_encoded(self, *, refs: Sequence[Reference]) -> list[bytes | RegistryError]:
        plan = current_plan()
        floor = self._followed()  # before the generation: see the module docstring
        generation = self._local.generation if self._local is not None else 0
        with tracing.span("cache.l1", **{"cache.keys": len(refs)}) as span:
            found: list[bytes | None] = [self._from_local(ref, plan) for ref in refs]
            missing = [i for i, entry in enumerate(found) if entry is None]
            if span is not None:
                span.set_attribute("cache.misses", len(missing))
        if self._remote is not None and missing:
            with tracing.span("cache.l2", **{"cache.keys": len(missing)}):
                counters, through = await self._from_remote(
                    refs, missing, found, generation, (plan, floor)
                )
        else:
            counters, through = {}, -1
        missing = [i for i in missing if found[i] is None]
        if missing:
            with (
                tracing.span("cache.postgres", **{"cache.keys": len(missing)}),
                await self._fill_reads(plan, max(floor, through)),
            ):
                await self._from_store(refs, missing, found, counters, generation)
        return [result_of(entry) for entry in found]  # type: ignore[arg-type]

    async def model_encoded(self, *, key: ModelKey) -> bytes:
        # GetModel is not on the serving path: L1 only, filled from the store.
        cache_key = keys.model_key(key)
        usable = self._local is not None and current_plan().local
        entry = self._local.get(cache_key) if usable else None  # type: ignore[union-attr]
        self._stats.add("cache.model.hits" if entry else "cache.model.misses")
        if entry is None:
            floor = self._followed()
            generation = self._local.generation if self._local is not None else 0
            try:
                with await self._fill_reads(current_plan(), floor):
                    model = await self._store.get_model(key=key)
                entry = values.hit(self._encoder.model(model))
            except NotFound as exc:
                entry = values.missing(exc)
            if self._local is not None:
                self._local.put([(cache_key, entry)], generation)
        result = result_of(entry)
        if isinstance(result, RegistryError):
            raise result
        return result

    async def _fill_reads(self, plan: Plan, revision: int) -> AbstractContextManager[None]:
        """The plan of a database read whose answer fills the caches: it must reflect
        every change up to `revision` (the follower's, for L1; L2's watermark, for L2),
        so a replica that has not replayed that far sends it to the primary."""
        behind = self._replica is not None and not await self._replica.reached(revision=revision)
        if behind and not plan.primary:
            self._stats.add("cache.db.replica_behind")
            plan = dataclasses.replace(plan, primary=True)
        return lookup_plan(plan)

    def _from_local(self, ref: Reference, plan: Plan) -> bytes | None:
        if self._local is None:
            return None
        if not plan.local:
            self._stats.add("cache.l1.behind")
            return None
        entry = walk(ref, self._local.get)
        self._stats.add("cache.l1.hits" if entry is not None else "cache.l1.misses")
        return entry

    async def _from_remote(
        self,
        refs: Sequence[Reference],
        missing: list[int],
        found: list[bytes | None],
        generation: int,
        need: tuple[Plan, int],
    ) -> tuple[dict[int, tuple[str, bytes]], int]:
        """Fill `found` from L2; return the model counters (and the epoch they were read
        in) of what L2 lacked, and L2's watermark (-1: not read). `need`: the
        lookup's plan and the follower's revision (what L2 must reflect to answer, and
        to fill L1)."""
        if self._remote is None or not missing:
            return {}, -1
        picked = [refs[i] for i in missing]
        try:
            reply, through, epoch = await self._remote.lookup([_walk_args(r) for r in picked])
        except RedisUnavailable:
            self._stats.add("cache.l2.errors")
            return {}, -1
        plan, floor = need
        answers = plan.min_revision == 0 or through >= plan.min_revision
        fills = through >= floor
        if not answers:
            self._stats.add("cache.l2.behind", len(missing))
        counters: dict[int, tuple[str, bytes]] = {}
        for slot, i in enumerate(missing):
            state, pointer, version, counter = reply[4 * slot : 4 * slot + 4]
            seen = _seen_entries(refs[i], state, pointer, version)
            found[i] = walk(refs[i], seen.get) if answers else None
            if found[i] is None:
                counters[i] = (epoch, counter or b"0")
            elif self._local is not None and fills:
                self._local.put(seen.items(), generation)
        self._stats.add("cache.l2.hits", len(missing) - len(counters))
        self._stats.add("cache.l2.misses", len(counters))
        return counters, through

    async def _from_store(
        self,
        refs: Sequence[Reference],
        missing: list[int],
        found: list[bytes | None],
        counters: dict[int, tuple[str, bytes]],
        generation: int,
    ) -> None:
        self._stats.add("cache.db.lookups", len(missing))
        answers = await self._store.resolve_many(refs=[refs[i] for i in missing])
        for i, answer in zip(missing, answers, strict=True):
            entries = entries_of(refs[i], answer, self._encoder)
            found[i] = walk(refs[i], dict(entries).get) if entries else None
            if found[i] is None:  # an uncacheable error
                assert isinstance(answer, RegistryError)
                raise answer
            if self._local is not None:
                self._local.put(entries, generation)
            if self._remote and i in counters:
                await self._fill_remote(refs[i].model, counters[i], entries)

    async def _fill_remote(
        self, model: ModelKey, seen: tuple[str, bytes], entries: Entries
    ) -> None:
        epoch, counter = seen
        counter_key = keys.COUNTER + keys.model_id(model)
        try:
            filled = await self._remote.fill(counter_key, counter, entries, epoch=epoch)  # type: ignore[union-attr]
        except RedisUnavailable:
            return
        self._stats.add("cache.l2.fills" if filled else "cache.l2.fills_refused")


def _walk_args(ref: Reference) -> tuple[str, str, str, str, str]:
    model = ref.model
    return (
        keys.state_key(model),
        keys.pointer_of(ref) or "",
        keys.version_key(model, 0)[:-1],  # the prefix; the script appends the number
        "" if ref.number is None else str(ref.number),
        keys.COUNTER + keys.model_id(model),
    )


def _seen_entries(
    ref: Reference, state: bytes | None, pointer: bytes | None, version: bytes | None
) -> dict[str, bytes]:
    seen: dict[str, bytes] = {}
    if state is not None:
        seen[keys.state_key(ref.model)] = state
    ptr_key = keys.pointer_of(ref)
    number = ref.number
    if ptr_key is not None and pointer is not None:
        seen[ptr_key] = pointer
        number = int(pointer[1:]) if pointer[:1] == values.HIT else None
    if number is not None and version is not None:
        seen[keys.version_key(ref.model, number)] = version
    return seen


class CacheInvalidator:
    """The CommitListener that keeps the tiers honest after every committed write."""

    def __init__(
        self, *, local: LocalCache | None, remote: RedisCache | None, stats: CacheStats
    ) -> None:
        self._local = local
        self._remote = remote
        self._stats = stats

    async def __call__(self, events: Sequence[Event]) -> None:
        stale = keys.invalidated_by(events)
        if not stale:
            return
        if self._local is not None:
            self._local.drop(k for model_keys in stale.values() for k in model_keys)
        if self._remote is not None:
            await self._remote.invalidate(stale)
        self._stats.add("cache.invalidations", sum(len(v) for v in stale.values()))
