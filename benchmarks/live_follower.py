"""One process of live-cache followers for benchmarks/live.py (run by it, not by hand).

    python benchmarks/live_follower.py TARGET REF FINAL CACHES

Opens CACHES live caches of REF, each on its own channel, prints `ready` once all have
loaded, and records for every cache when (time.time(): one clock for every process of
the host) it first showed each version number. A move to a lower number than the cache
showed counts as a violation (the writer only moves forward). Once every cache shows
FINAL it prints one JSON line: {"violations": N, "seen": [[[number, time], ...], ...]}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from contextlib import AsyncExitStack
from typing import Any

from modelreg.client import AsyncClient


class Recorder:
    """The on_change callback of one cache: first-seen times, and backward moves."""

    def __init__(self, shown: int, final: int, done: asyncio.Event, left: list[int]) -> None:
        self.shown, self.final, self._done, self._left = shown, final, done, left
        self.seen: list[tuple[int, float]] = []
        self.violations = 0

    def __call__(self, reference: str, old: Any, new: Any) -> None:
        now = time.time()
        number = new.number if new is not None else 0
        if number < self.shown:
            self.violations += 1
        elif number > self.shown:
            self.seen.append((number, now))
        self.shown = number
        if number == self.final:
            self._left[0] -= 1
            if self._left[0] == 0:
                self._done.set()


async def follow(target: str, reference: str, final: int, caches: int) -> dict[str, Any]:
    done = asyncio.Event()
    left = [caches]
    recorders = []
    async with AsyncExitStack() as stack:
        for _ in range(caches):
            client = await stack.enter_async_context(AsyncClient(target))
            live = await stack.enter_async_context(client.live(references=[reference]))
            recorder = Recorder(live.resolve(reference).number, final, done, left)
            live.on_change(recorder)
            recorders.append(recorder)
        print("ready", flush=True)
        await done.wait()
    return {
        "violations": sum(r.violations for r in recorders),
        "seen": [r.seen for r in recorders],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", help="registry HOST:PORT")
    parser.add_argument("reference", help="the reference to follow, e.g. ns/model@alias")
    parser.add_argument("final", type=int, help="the version number that ends the run")
    parser.add_argument("caches", type=int, help="live caches in this process")
    args = parser.parse_args()
    result = asyncio.run(follow(args.target, args.reference, args.final, args.caches))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
