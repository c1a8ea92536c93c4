"""A live-cache follower in its own process, for the multi-process tests and the benchmark.

    python -m tests.integration.live_follower TARGET REF FINAL [CACHES]

Opens CACHES (default 1) live caches of REF on one channel each, prints `ready` once all
have loaded, then records every change each one makes: the version number it moved to
and when (time.time(), comparable across processes on one host). A move to a lower number
than the cache showed before counts as a violation (the writer only ever moves forward).
When every cache shows version FINAL it prints one JSON line and exits:
{"violations": N, "changes": [[cache, number, time], ...], "restarts": N}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from contextlib import AsyncExitStack

from modelreg.client import AsyncClient
from modelreg.v1 import resources_pb2 as res


async def follow(target: str, reference: str, final: int, caches: int) -> dict[str, object]:
    changes: list[tuple[int, int, float]] = []
    violations = 0
    shown: dict[int, int] = {}
    done = asyncio.Event()

    def recorder(index: int):  # type: ignore[no-untyped-def]
        def on_change(ref: str, old: res.ModelVersion | None, new: res.ModelVersion | None) -> None:
            nonlocal violations
            now = time.time()
            number = new.number if new is not None else 0
            if number < shown[index]:
                violations += 1
            shown[index] = number
            changes.append((index, number, now))
            if all(n == final for n in shown.values()):
                done.set()

        return on_change

    async with AsyncExitStack() as stack:
        lives = []
        for index in range(caches):
            client = await stack.enter_async_context(AsyncClient(target))
            live = await stack.enter_async_context(client.live(references=[reference]))
            shown[index] = live.resolve(reference).number
            live.on_change(recorder(index))
            lives.append(live)
        print("ready", flush=True)
        if not all(n == final for n in shown.values()):
            await done.wait()
        restarts = sum(live.restarts for live in lives)
    return {"violations": violations, "changes": changes, "restarts": restarts}


def main() -> None:
    target, reference, final = sys.argv[1], sys.argv[2], int(sys.argv[3])
    caches = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    print(json.dumps(asyncio.run(follow(target, reference, final, caches))), flush=True)


if __name__ == "__main__":
    main()
