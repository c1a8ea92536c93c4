"""Prometheus metrics (docs/architecture.md, "Metrics"): what each process measures, and
the one endpoint that exposes every process's numbers.

On the call path a process only counts, in plain dicts (`Recorder`: a clock read, a
bisect and three increments per call, well under a microsecond). prometheus-client's own
metric objects cost several microseconds per call in multi-process mode (an mmap write
under a lock per value) — a third of an L1 hit — so they are not used there. Instead:

- `Recorder.snapshot()` is every counter and gauge of the process as plain data;
- with `--workers N` each worker writes its snapshot to a file in a directory the
  supervisor made, once a second (`publish`), and the supervisor serves the endpoint,
  summing the files (a worker that died keeps its counts, so no counter goes back; its
  gauges are dropped);
- a single process serves its own snapshot.

Exposition is prometheus-client's (`Exporter` is a Collector of its metric families,
served by its HTTP server), never a hand-written format.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# seconds; an L1 hit is ~0.1 ms through gRPC, an upload minutes
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
           0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)  # fmt: skip
PUBLISH_SECONDS = 1.0

Snapshot = dict[str, Any]  # JSON-able: see Recorder.snapshot


@dataclass
class _Calls:
    """One (method, code)'s latency histogram: counts per bucket (the last is +Inf)."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0


class Recorder:
    """One process's measurements. `counters` is the process's named counters (the cache
    tiers', the change log's, ...: CacheStats), read as they are at each snapshot;
    `gauges` are read at each snapshot too (pools, live streams, revisions)."""

    def __init__(
        self,
        counters: Mapping[str, int] | None = None,
        gauges: Callable[[], Mapping[str, float]] | None = None,
    ) -> None:
        self._calls: dict[tuple[str, str], _Calls] = {}
        self._in_flight: dict[str, int] = {}
        self._types: dict[str, str] = {}
        self._counters = counters if counters is not None else {}
        self._gauges = gauges
        # GetServerStats(reset=true) clears the named counters; Prometheus counters never
        # go back, so each is kept as the sum of what it gained between snapshots
        self._seen: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        # scrapes may come on several of the HTTP server's threads at once: one snapshot
        # at a time, or two would both add the same gain to the totals
        self._snapshotting = threading.Lock()

    def method(self, method: str, kind: str) -> None:
        """Name a method's kind (unary, server_stream, ...) before its first call."""
        self._types[method] = kind
        self._in_flight.setdefault(method, 0)

    def started(self, method: str) -> None:
        self._in_flight[method] += 1

    def finished(self, method: str, code: str, seconds: float) -> None:
        self._in_flight[method] -= 1
        calls = self._calls.get((method, code))
        if calls is None:
            calls = self._calls[method, code] = _Calls()
        calls.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        calls.total += seconds

    def snapshot(self) -> Snapshot:
        """Every number of this process, as plain data (what `publish` writes). Safe from
        other threads: the event loop only adds to what it reads, and copies are taken
        whole (each `list(...)` and `dict(...)` runs without releasing the GIL)."""
        with self._snapshotting:
            return self._snapshot()

    def _snapshot(self) -> Snapshot:
        for name, value in list(self._counters.items()):
            if name.endswith(".revision"):
                continue  # a position, not a count: a gauge below
            before = self._seen.get(name, 0)
            self._totals[name] = self._totals.get(name, 0) + (
                value - before if value >= before else value
            )
            self._seen[name] = value
        for name in list(self._seen):  # cleared by a reset: everything after it counts
            if name not in self._counters:
                self._seen[name] = 0
        gauges = dict(self._gauges()) if self._gauges is not None else {}
        gauges |= {
            name: float(v) for name, v in self._counters.items() if name.endswith(".revision")
        }
        return {
            "pid": os.getpid(),
            "calls": [
                [method, self._types.get(method, "unary"), code, list(c.buckets), c.total]
                for (method, code), c in list(self._calls.items())
            ],
            "in_flight": dict(self._in_flight),
            "counters": dict(self._totals),
            "gauges": gauges,
        }


async def publish(recorder: Recorder, directory: Path, interval: float = PUBLISH_SECONDS) -> None:
    """Write the recorder's snapshot to `directory/<pid>.json` every `interval` seconds
    (replacing it whole, so a reader never sees half a file), until cancelled; once more
    when cancelled, so a stopping worker's last calls count."""
    path = directory / f"{os.getpid()}.json"
    try:
        while True:
            _write(path, recorder.snapshot())
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(OSError):
            _write(path, recorder.snapshot())


def _write(path: Path, snapshot: Snapshot) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(snapshot))
    os.replace(partial, path)


def published(directory: Path, live: Callable[[], set[int]]) -> list[Snapshot]:
    """The snapshots the workers wrote; a dead worker's without its gauges (its counts
    stay: they happened)."""
    alive = live()
    found = []
    for path in sorted(directory.glob("*.json")):
        try:
            snapshot = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # replaced between listing and reading: the next scrape has it
        if snapshot.get("pid") not in alive:
            snapshot["in_flight"], snapshot["gauges"] = {}, {}
        found.append(snapshot)
    return found


# How the named counters are exposed: cache.<tier>.hits|misses as one family by tier and
# result; the rest by name.
_CACHE_RESULTS = {"hits": "hit", "misses": "miss"}


class Exporter:
    """A prometheus-client Collector over snapshots: `sources()` gives them at each scrape."""

    def __init__(self, sources: Callable[[], list[Snapshot]]) -> None:
        self._sources = sources
        self.port = 0  # where serve_metrics serves it

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snapshots = self._sources()
        labels = ["service", "method", "type", "code"]
        calls = HistogramMetricFamily(
            "modelreg_rpc_duration_seconds",
            "Handled gRPC calls by method and status code, and how long each took",
            labels=labels,
        )
        for (method, kind, code), (buckets, total) in sorted(_summed_calls(snapshots).items()):
            service, name = _split(method)
            cumulative, running = [], 0
            for bound, count in zip((*map(repr, BUCKETS), "+Inf"), buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            calls.add_metric([service, name, kind, code], cumulative, total)
        yield calls
        in_flight = GaugeMetricFamily(
            "modelreg_rpcs_in_flight", "gRPC calls being handled now", labels=["service", "method"]
        )
        for method, calling in sorted(_summed(s["in_flight"] for s in snapshots).items()):
            in_flight.add_metric(list(_split(method)), calling)
        yield in_flight
        cache = CounterMetricFamily(
            "modelreg_cache_requests", "Lookups by cache tier and result", labels=["tier", "result"]
        )
        events = CounterMetricFamily(
            "modelreg_events", "Named counters of the process (GetServerStats' counters)",
            labels=["event"],
        )  # fmt: skip
        for name, value in sorted(_summed(s["counters"] for s in snapshots).items()):
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "cache" and parts[2] in _CACHE_RESULTS:
                cache.add_metric([parts[1], _CACHE_RESULTS[parts[2]]], value)
            else:
                events.add_metric([name], value)
        yield cache
        yield events
        yield from _gauge_families(snapshots, GaugeMetricFamily)


def _gauge_families(snapshots: list[Snapshot], family: Any) -> Iterator[Any]:
    """One family per gauge name (`postgres.pool.idle` -> modelreg_postgres_pool_idle),
    summed over processes, except revisions and lags (the highest: how far the registry
    is known, how far the worst process trails) and the blob store's disk (one disk)."""
    values: dict[str, float] = {}
    for snapshot in snapshots:
        for name, value in snapshot["gauges"].items():
            if name.endswith((".revision", "_revisions", "_bytes")):
                values[name] = max(values.get(name, value), value)
            else:
                values[name] = values.get(name, 0.0) + value
    for name, value in sorted(values.items()):
        metric = family(f"modelreg_{name.replace('.', '_')}", f"{name} (summed over processes)")
        metric.add_metric([], value)
        yield metric


def _summed_calls(snapshots: list[Snapshot]) -> dict[tuple[str, str, str], tuple[list[int], float]]:
    summed: dict[tuple[str, str, str], tuple[list[int], float]] = {}
    for snapshot in snapshots:
        for method, kind, code, buckets, total in snapshot["calls"]:
            key = (method, kind, code)
            before, before_total = summed.get(key, ([0] * len(buckets), 0.0))
            summed[key] = ([a + b for a, b in zip(before, buckets, strict=True)],
                           before_total + total)  # fmt: skip
    return summed


def _summed(maps: Iterable[Mapping[str, float]]) -> dict[str, float]:
    summed: dict[str, float] = {}
    for values in maps:
        for name, value in values.items():
            summed[name] = summed.get(name, 0) + value
    return summed


def _split(method: str) -> tuple[str, str]:
    """`/modelreg.v1.RegistryService/ResolveReference` -> (modelreg.v1.RegistryService,
    ResolveReference)."""
    service, _, name = method.strip("/").rpartition("/")
    return service, name


def serve_metrics(address: str, exporter: Exporter) -> Callable[[], None]:
    """Serve `exporter` at http://address/metrics (prometheus-client's server, in a thread
    of its own); return what stops it. The port 0 picks one: `bound_port` says which."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    host, _, port = address.rpartition(":")
    server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    exporter.port = server.server_port
    log.info("metrics: http://%s:%d/metrics (MODELREG_METRICS_ADDRESS)", host, server.server_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop
