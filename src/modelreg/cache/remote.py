"""L2: Redis, shared by every server process; optional and never fatal.

Reads walk a model's entries in one round trip (a Lua script). Fills are
compare-and-set on the model's write counter, read before the database was:
a slow reader can never put back a value older than a committed write.
Any Redis failure opens a breaker for a moment, so lookups fall through to
PostgreSQL without waiting; a background task reconnects, and after an outage
the epoch moves (to a random id) so nothing written before it (and perhaps missed by an
invalidation) is read again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from modelreg.cache import keys
from modelreg.domain.coalesce import Coalescer, Count

log = logging.getLogger(__name__)

# ARGV: epoch, then per lookup: state key, pointer key or "", version-key prefix,
# version number or "", counter key. Returns per lookup {state, pointer, version, counter},
# then the epoch's invalidation watermark (see _FOLLOW; -1 if none);
# or {"E", epoch} when the caller's epoch is out of date.
_LOOKUP = """
local prefix = 'mr:' .. ARGV[1] .. ':'
local epoch = redis.call('GET', KEYS[1]) or '0'
if epoch ~= ARGV[1] then return {'E', epoch} end
local out = {}
for i = 2, #ARGV, 5 do
  local state = redis.call('GET', prefix .. ARGV[i])
  local pointer, version = false, false
  local number = ARGV[i + 3]
  if state == 'A' and ARGV[i + 1] ~= '' then
    pointer = redis.call('GET', prefix .. ARGV[i + 1])
    number = (pointer and string.sub(pointer, 1, 1) == 'V') and string.sub(pointer, 2) or ''
  end
  if state == 'A' and number ~= '' then
    version = redis.call('GET', prefix .. ARGV[i + 2] .. number)
  end
  local counter = redis.call('GET', prefix .. ARGV[i + 4]) or '0'
  table.insert(out, state); table.insert(out, pointer)
  table.insert(out, version); table.insert(out, counter)
end
table.insert(out, redis.call('GET', prefix .. 'through') or '-1')
return out
"""
# KEYS: epoch key. ARGV: epoch, ttl ms, negative ttl ms, counter key, counter seen, then
# key/value pairs. Refused unless the epoch is still the filler's: after Redis lost its data
# an absent counter reads "0" again, and only the epoch tells the filler's read is older.
# (Epoch "0", no epoch key, has no watermark: a lookup with a token never trusts it.)
_FILL = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
local prefix = 'mr:' .. ARGV[1] .. ':'
if (redis.call('GET', prefix .. ARGV[4]) or '0') ~= ARGV[5] then return 0 end
for i = 6, #ARGV, 2 do
  local kind = string.sub(ARGV[i + 1], 1, 1)
  local ttl = (kind == 'N' or kind == 'D') and ARGV[3] or ARGV[2]
  redis.call('SET', prefix .. ARGV[i], ARGV[i + 1], 'PX', ttl)
end
return 1
"""
# ARGV: counter ttl s, then per model: counter key, key count, keys...
# Bumps each model's counter, deletes its keys, tells every process to drop them from L1.
# It reads the epoch itself: a write must reach the entries readers are using now.
_INVALIDATE = """
local prefix = 'mr:' .. (redis.call('GET', KEYS[1]) or '0') .. ':'
local dropped = {}
local i = 2
while i <= #ARGV do
  redis.call('INCR', prefix .. ARGV[i]); redis.call('EXPIRE', prefix .. ARGV[i], ARGV[1])
  for j = i + 2, i + 1 + tonumber(ARGV[i + 1]) do
    redis.call('DEL', prefix .. ARGV[j]); table.insert(dropped, ARGV[j])
  end
  i = i + 2 + tonumber(ARGV[i + 1])
end
redis.call('PUBLISH', KEYS[2], table.concat(dropped, '\\n'))
return #dropped
"""

# The change log's followers (one per process, cache/following.py) invalidate every
# committed change here in revision order and keep the epoch's watermark `through`: every
# change at or below it has been invalidated in this epoch, so an entry read now reflects
# every change up to `through`, whether or not its writer's own invalidation arrived (a
# failed Redis call, a writer killed between commit and invalidation). A follower may move
# the watermark from `from` only if it already covers `from`; otherwise changes in between
# may never have been invalidated, and it starts a fresh epoch (empty: an entry in it is
# filled from a database read made after it began, so it reflects every change before).
# Epoch ids are random (new_epoch_id), never a counter: a Redis that lost its data (a
# restart, FLUSHALL, a failover to an empty replica) would count from 1 again and let a
# filler from the old epoch of that number write into the new one.
# KEYS: epoch key. ARGV: counter ttl s, from, to, the id a fresh epoch gets, then per
# model: counter key, key count, keys... Returns the epoch.
_FOLLOW = """
local epoch = redis.call('GET', KEYS[1]) or '0'
if tonumber(redis.call('GET', 'mr:' .. epoch .. ':through') or '-1') < tonumber(ARGV[2]) then
  epoch = ARGV[4]
  redis.call('SET', KEYS[1], epoch)
end
local prefix = 'mr:' .. epoch .. ':'
local i = 5
while i <= #ARGV do
  redis.call('INCR', prefix .. ARGV[i]); redis.call('EXPIRE', prefix .. ARGV[i], ARGV[1])
  for j = i + 2, i + 1 + tonumber(ARGV[i + 1]) do redis.call('DEL', prefix .. ARGV[j]) end
  i = i + 2 + tonumber(ARGV[i + 1])
end
if tonumber(redis.call('GET', prefix .. 'through') or '-1') < tonumber(ARGV[3]) then
  redis.call('SET', prefix .. 'through', ARGV[3])  -- no TTL: one small key per epoch
end
return epoch
"""

COUNTER_TTL_SECONDS = 86_400  # far longer than any read, so a counter never repeats a value
INVALIDATE_ATTEMPTS = 3
FAILURES_TO_TRIP = 3  # one slow reply on a busy machine is not an outage
_REFUSED = (RedisConnectionError, ConnectionError)  # nobody listening: trip at once


def new_epoch_id() -> str:
    """A fresh epoch's id: unique across Redis restarts and data loss (128 random bits)."""
    return secrets.token_hex(16)


Walk = tuple[str, str, str, str, str]  # a lookup's keys: see RedisCache.lookup
_WalkRead = tuple[tuple[bytes | None, ...], int, str]  # its four values, through, epoch


class L2Reply(NamedTuple):
    """What one L2 lookup read: the values, the watermark, the epoch."""

    values: list[bytes | None]
    through: int  # every entry read reflects every change up to here (-1: unknown)
    epoch: str


class RedisUnavailable(Exception):
    """L2 is down or its breaker is open; callers fall through to the database."""


class RedisCache:
    """The L2 tier over three clients: `client` with short timeouts for lookups and fills
    (a slow Redis must not slow them: they fall through), `writer` with a longer one for
    invalidations (a write is acknowledged only once L2 forgot what it replaced), and
    `listener` without a read timeout for the invalidation channel."""

    def __init__(
        self,
        client: redis.Redis,
        writer: redis.Redis,
        listener: redis.Redis,
        *,
        ttl: float,
        negative_ttl: float,
        on_drop: Callable[[list[str] | None], None],
        count: Count | None = None,
    ) -> None:
        self._client = client
        self._walks = Coalescer[Walk, _WalkRead](
            self._lookup_many, count=count, name="cache.l2.lookups"
        )
        self._listener = listener
        self._ttl_ms = str(int(ttl * 1000))
        self._negative_ttl_ms = str(int(negative_ttl * 1000))
        self._on_drop = on_drop  # None = drop everything
        self._lookup = client.register_script(_LOOKUP)
        self._fill = client.register_script(_FILL)
        self._invalidate = writer.register_script(_INVALIDATE)
        self._follow = writer.register_script(_FOLLOW)
        self._epoch = "0"
        self._down_until = 0.0
        self._failures = 0
        self._missed_invalidations = False
        self.available = False
        # Called once Redis answers again (the follower marks L2's watermark, following.py).
        self.on_recover: Callable[[], Awaitable[None]] | None = None

    async def lookup(self, walks: Sequence[Walk]) -> L2Reply:
        """Per walk (state, pointer, version prefix, number, counter keys): the four
        values; the revision every entry read reflects; the epoch they were read in.
        Concurrent lookups share one script call (domain/coalesce.py)."""
        if not self.available or time.monotonic() < self._down_until:
            raise RedisUnavailable("L2 breaker open")  # at once, not a turn later
        reads = await self._walks.load(walks)
        epochs = {epoch for _, _, epoch in reads}
        if len(epochs) > 1:  # split over two calls with an epoch change between them
            raise RedisUnavailable("epoch moved; retry next time")
        values = [value for four, _, _ in reads for value in four]
        through = min((t for _, t, _ in reads), default=-1)
        return L2Reply(values, through, epochs.pop() if epochs else self._epoch)

    async def _lookup_many(self, walks: Sequence[Walk]) -> list[_WalkRead]:
        args: list[str] = []
        epoch = self._epoch
        for walk in walks:
            args += walk
        reply = await self._call(self._lookup, [keys.EPOCH], [epoch, *args])
        if reply and reply[0] == b"E":
            self._new_epoch(reply[1].decode())
            raise RedisUnavailable("epoch moved; retry next time")
        through = int(reply[-1])
        return [(tuple(reply[4 * i : 4 * i + 4]), through, epoch) for i in range(len(walks))]

    async def follow(self, *, after: int, upto: int, stale: dict[str, list[str]]) -> bool:
        """Invalidate the changes in (after, upto] and move the watermark to `upto`
        (a follower's part, in revision order); False if Redis did not answer (the next
        call then finds a gap and starts a fresh epoch). Tried even while the lookup
        breaker is open, like invalidate()."""
        args: list[str] = [str(COUNTER_TTL_SECONDS), str(after), str(upto), new_epoch_id()]
        for model, model_keys in stale.items():
            args += [keys.COUNTER + model, str(len(model_keys)), *model_keys]
        try:
            epoch = await self._follow(keys=[keys.EPOCH], args=args)
        except (RedisError, OSError, TimeoutError):
            return False
        if self.available:
            self._new_epoch(epoch.decode() if isinstance(epoch, bytes) else str(epoch))
        return True

    async def fill(
        self, counter_key: str, seen: bytes, entries: Sequence[tuple[str, bytes]], *, epoch: str
    ) -> bool:
        """Store entries if the model's counter still reads `seen` in `epoch` (the lookup's:
        a counter read in an older epoch says nothing about the newer one)."""
        args: list[str | bytes] = [
            epoch,
            self._ttl_ms,
            self._negative_ttl_ms,
            counter_key,
            seen,
        ]
        for key, value in entries:
            args += [key, value]
        return bool(await self._call(self._fill, [keys.EPOCH], args))

    async def invalidate(self, stale: dict[str, list[str]]) -> None:
        """Bump the counters and delete the keys of committed writes; never raises.

        Tried even while the lookup breaker is open (a lookup timing out under load
        says little about a write), and retried; only if every attempt fails is the
        invalidation recorded as missed, which moves the epoch once Redis answers.
        """
        args: list[str] = [str(COUNTER_TTL_SECONDS)]
        for model, model_keys in stale.items():
            args += [keys.COUNTER + model, str(len(model_keys)), *model_keys]
        attempts = INVALIDATE_ATTEMPTS if self.available else 1
        for attempt in range(attempts):
            try:
                await self._invalidate(keys=[keys.EPOCH, keys.CHANNEL], args=args)
                return
            except (RedisError, OSError, TimeoutError) as exc:
                failure = exc
                if attempt + 1 < attempts:
                    await asyncio.sleep(0.05 * (attempt + 1))
        self._missed_invalidations = True
        self._trip(failure)

    async def start(self) -> None:
        """Read the epoch; leaves the breaker open if Redis is not there yet."""
        try:
            await self._recover()
        except (RedisError, OSError, TimeoutError) as exc:
            self._trip(exc)

    async def run(self) -> None:
        """Background: reconnect after outages and follow the invalidation channel."""
        await asyncio.gather(self._watch_health(), self._follow_invalidations())

    async def _call(
        self, script: object, script_keys: list[str], args: Sequence[str | bytes]
    ) -> list[bytes]:
        if not self.available or time.monotonic() < self._down_until:
            raise RedisUnavailable("L2 breaker open")
        try:
            reply = await script(keys=script_keys, args=args)  # type: ignore[operator]
        except (RedisError, OSError, TimeoutError) as exc:
            self._failures += 1
            if self._failures >= FAILURES_TO_TRIP or isinstance(exc, _REFUSED):
                self._trip(exc)
            raise RedisUnavailable(str(exc)) from exc
        self._failures = 0
        return reply  # type: ignore[no-any-return]

    def _trip(self, exc: BaseException) -> None:
        if self.available:
            log.warning("redis unavailable, serving from postgres: %s", exc)
        self._failures = 0
        self.available = False
        self._down_until = time.monotonic() + 0.5

    async def _recover(self) -> None:
        if self._missed_invalidations:
            epoch = new_epoch_id()
            await self._client.set(keys.EPOCH, epoch)
            self._new_epoch(epoch)
        else:
            current = await self._client.get(keys.EPOCH) or b"0"
            self._new_epoch(current.decode() if isinstance(current, bytes) else current)
        self._missed_invalidations = False
        self.available = True
        if self.on_recover is not None:
            await self.on_recover()

    def _new_epoch(self, epoch: str) -> None:
        if epoch != self._epoch:
            self._epoch = epoch
            self._on_drop(None)  # invalidations may have been missed: start L1 afresh

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            if self.available:
                continue
            try:
                await self._client.ping()
                await self._recover()
                log.warning("redis is back (epoch %s)", self._epoch)
            except (RedisError, OSError, TimeoutError):
                self._down_until = time.monotonic() + 0.5

    async def _follow_invalidations(self) -> None:
        while True:
            try:
                async with self._listener.pubsub() as pubsub:
                    await pubsub.subscribe(keys.CHANNEL)
                    self._on_drop(None)  # messages sent while unsubscribed are lost
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._dropped(message["data"])
            except (RedisError, OSError, TimeoutError):
                await asyncio.sleep(0.25)

    def _dropped(self, data: bytes) -> None:
        self._on_drop(None if data == b"*" else data.decode().split("\n"))
