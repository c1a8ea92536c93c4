"""The metrics' bookkeeping without a server: a recorder's counts, snapshots written and
read back as a supervisor does, a dead worker's counts kept and its gauges dropped, a
reset of the named counters never taking a Prometheus counter back, and the exposition
as prometheus-client parses it."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelreg.metrics import BUCKETS, Exporter, Recorder, publish, published

RESOLVE = "/modelreg.v1.RegistryService/ResolveReference"
WATCH = "/modelreg.v1.WatchService/Watch"


def scrape(exporter: Exporter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed back by prometheus-client."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labels(**given: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(given.items()))


def test_calls_are_counted_by_method_code_and_bucket() -> None:
    recorder = Recorder()
    recorder.method(RESOLVE, "unary")
    for seconds in (0.0002, 0.0002, 0.003, 20.0, 1000.0):
        recorder.started(RESOLVE)
        recorder.finished(RESOLVE, "OK", seconds)
    recorder.started(RESOLVE)
    recorder.finished(RESOLVE, "NOT_FOUND", 0.001)
    recorder.method(WATCH, "server_stream")
    recorder.started(WATCH)  # still open
    samples = scrape(Exporter(lambda: [recorder.snapshot()]))
    ok = {"service": "modelreg.v1.RegistryService", "method": "ResolveReference",
          "type": "unary", "code": "OK"}  # fmt: skip
    assert samples["modelreg_rpc_duration_seconds_count", labels(**ok)] == 5
    assert samples["modelreg_rpc_duration_seconds_bucket", labels(**ok, le="0.00025")] == 2
    assert samples["modelreg_rpc_duration_seconds_bucket", labels(**ok, le="0.005")] == 3
    assert samples["modelreg_rpc_duration_seconds_bucket", labels(**ok, le="300.0")] == 4
    assert samples["modelreg_rpc_duration_seconds_bucket", labels(**ok, le="+Inf")] == 5
    assert abs(samples["modelreg_rpc_duration_seconds_sum", labels(**ok)] - 1020.0034) < 1e-6
    not_found = {**ok, "code": "NOT_FOUND"}
    assert samples["modelreg_rpc_duration_seconds_count", labels(**not_found)] == 1
    watching = labels(service="modelreg.v1.WatchService", method="Watch")
    assert samples["modelreg_rpcs_in_flight", watching] == 1
    assert samples["modelreg_rpcs_in_flight", labels(
        service="modelreg.v1.RegistryService", method="ResolveReference")] == 0  # fmt: skip
    assert len(BUCKETS) + 1 == sum(
        1 for name, labelled in samples if name.endswith("_bucket") and ("code", "OK") in labelled
    )


def test_named_counters_split_by_tier_and_survive_a_reset() -> None:
    counters: Counter[str] = Counter({"cache.l1.hits": 7, "cache.l1.misses": 3,
                                      "cache.db.lookups": 3, "watch.streams": 1})  # fmt: skip
    counters["identity.keys.revision"] = 42  # a position, exposed as a gauge
    recorder = Recorder(counters, gauges=lambda: {"postgres.pool.idle": 4})
    recorder.snapshot()
    counters.clear()  # GetServerStats(reset=true)
    counters["cache.l1.hits"] = 2
    samples = scrape(Exporter(lambda: [recorder.snapshot()]))
    assert samples["modelreg_cache_requests_total", labels(tier="l1", result="hit")] == 9
    assert samples["modelreg_cache_requests_total", labels(tier="l1", result="miss")] == 3
    assert samples["modelreg_events_total", labels(event="cache.db.lookups")] == 3
    assert samples["modelreg_postgres_pool_idle", ()] == 4
    assert ("modelreg_identity_keys_revision", ()) not in samples  # the reset dropped it
    counters["cache.l1.hits"] = 5
    again = scrape(Exporter(lambda: [recorder.snapshot()]))
    assert again["modelreg_cache_requests_total", labels(tier="l1", result="hit")] == 12


def test_a_supervisor_sums_its_workers_and_keeps_a_dead_ones_counts(tmp_path: Path) -> None:
    snapshots = []
    for pid, calls, idle in ((101, 3, 2), (102, 5, 1)):
        gauges: dict[str, float] = {"postgres.pool.idle": idle, "changelog.lag_revisions": idle}
        recorder = Recorder(gauges=gauges.copy)
        recorder.method(RESOLVE, "unary")
        for _ in range(calls):
            recorder.started(RESOLVE)
            recorder.finished(RESOLVE, "OK", 0.001)
        snapshot = recorder.snapshot() | {"pid": pid}
        snapshots.append(snapshot)
        (tmp_path / f"{pid}.json").write_text(json.dumps(snapshot))
    (tmp_path / "103.json").write_text("{half a fi")  # a reader never sees this, but if so
    live = {101, 102}
    exporter = Exporter(lambda: published(tmp_path, lambda: live))
    ok = labels(service="modelreg.v1.RegistryService", method="ResolveReference",
                type="unary", code="OK")  # fmt: skip
    samples = scrape(exporter)
    assert samples["modelreg_rpc_duration_seconds_count", ok] == 8
    assert samples["modelreg_postgres_pool_idle", ()] == 3  # summed
    assert samples["modelreg_changelog_lag_revisions", ()] == 2  # the worst
    live.discard(102)  # died: its calls happened, its pool is gone
    samples = scrape(exporter)
    assert samples["modelreg_rpc_duration_seconds_count", ok] == 8
    assert samples["modelreg_postgres_pool_idle", ()] == 2


def files(directory: Path, pattern: str) -> list[Path]:
    return list(directory.glob(pattern))


async def test_publish_writes_whole_files_and_a_last_one_when_stopped(tmp_path: Path) -> None:
    recorder = Recorder()
    recorder.method(RESOLVE, "unary")
    task = asyncio.ensure_future(publish(recorder, tmp_path, interval=0.01))
    await asyncio.sleep(0.05)
    recorder.started(RESOLVE)
    recorder.finished(RESOLVE, "OK", 0.001)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    (written,) = files(tmp_path, "*.json")
    snapshot = json.loads(written.read_text())
    assert snapshot["calls"][0][2] == "OK"  # the last call counted
    assert not files(tmp_path, "*.tmp")
