"""Metrics through a real Prometheus: `modelreg serve --workers 2` with
MODELREG_METRICS_ADDRESS, lookups driven through both workers, and Prometheus (Debian's
`prometheus`, started here on loopback, scraping every second with the shipped alert
rules loaded) answering PromQL with exactly the calls this test made, by status code —
also after a worker is killed and replaced. The shipped rules pass `promtool check`, and
every expression of the Grafana dashboard runs in that Prometheus against series the
endpoint really exposes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest

from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import watch_service_pb2 as ws
from modelreg.v1 import watch_service_pb2_grpc as ws_grpc
from tests.helpers import free_port, make_model, make_version
from tests.integration.serverproc import ServerProcess
from tests.integration.test_read_your_writes import Worker, one_channel_per_worker

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "modelreg.json"
RESOLVES = 'sum by (code) (modelreg_rpc_duration_seconds_count{method="ResolveReference"})'


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"no `{name}` on PATH: `make test` installs Debian's prometheus package"
            " (apt-get install prometheus); or install it yourself"
        )
    return found


class Prometheus:
    """A Prometheus server on a free loopback port, scraping `target` every second."""

    def __init__(self, target: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "modelreg", "static_configs": [{"targets": [target]}]}
            ],
        }))  # fmt: skip
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [binary("prometheus"), f"--config.file={config}",
                 f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=out,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)  # polls readiness; the interval orders nothing
        raise RuntimeError(f"prometheus not ready in 60 s:\n{self.log.read_text()[-3000:]}")

    def api(self, path: str, **query: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(query)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{query}: {exc.code} {exc.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def by_code(self, query: str) -> dict[str, float]:
        result = self.api("query", query=query)["result"]
        return {r["metric"].get("code", ""): float(r["value"][1]) for r in result}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def eventually(read: Any, expected: Any) -> Any:
    """Poll `read()` (blocking; run in a thread) until it returns `expected` (60 s)."""
    deadline = time.monotonic() + 60
    got = None
    while time.monotonic() < deadline:
        got = await asyncio.to_thread(read)
        if got == expected:
            return got
        await asyncio.sleep(0.5)  # scrapes come each second; the interval orders nothing
    raise AssertionError(f"got {got}, expected {expected}")


@pytest.fixture
def home() -> Iterator[Path]:
    """A home outside pytest's tmp_path (0700): the embedded PostgreSQL runs as its own
    user and must reach its data directory."""
    path = Path(tempfile.mkdtemp(prefix="modelreg-test-metrics-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def served(home: Path, tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, str]]:
    metrics = f"127.0.0.1:{free_port()}"
    server = ServerProcess(tmp_path / "serve.log", MODELREG_WORKERS="2", MODELREG_HOME=str(home),
                           MODELREG_METRICS_ADDRESS=metrics)  # fmt: skip
    try:
        await asyncio.to_thread(server.wait_serving, 180)
        await asyncio.to_thread(server.wait_workers, 2, 180)
        yield server, metrics
    finally:
        server.stop()


async def resolve(worker: Worker, reference: str, times: int) -> None:
    """Resolve `reference` `times` times; each answers, or is NOT_FOUND."""
    codes = set()
    for _ in range(times):
        try:
            await worker.stub.ResolveReference(rs.ResolveReferenceRequest(reference=reference))
            codes.add(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            codes.add(exc.code())
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND}


@pytest.mark.slow
async def test_prometheus_counts_every_call_of_every_worker_by_code(
    served: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    server, metrics = served
    async with AsyncExitStack() as stack:
        first, second = await one_channel_per_worker(server.target, stack, server.token)
        await make_model(first.stub)
        version = await make_version(first.stub)
        await first.stub.SetAlias(rs.SetAliasRequest(
            name="namespaces/default/models/m/aliases/production", version_number=version.number
        ))  # fmt: skip
        watch = ws_grpc.WatchServiceStub(second.channel)  # a stream, so the hub's gauges show
        stream = watch.Watch(ws.WatchRequest(models=["namespaces/default/models/m"]))
        prometheus = Prometheus(metrics, tmp_path)
        try:
            await resolve(first, "default/m@production", 1)  # the series exist before the load
            await resolve(first, "default/m@gone", 1)
            await eventually(lambda: prometheus.by_code(RESOLVES), {"OK": 1, "NOT_FOUND": 1})
            before = time.time()
            await asyncio.gather(  # concurrently, on both workers
                resolve(first, "default/m@production", 30), resolve(first, "default/m@gone", 5),
                resolve(second, "default/m@production", 20), resolve(second, "nope/m:1", 7),
            )  # fmt: skip
            await eventually(lambda: prometheus.by_code(RESOLVES), {"OK": 51, "NOT_FOUND": 13})
            # the load between two instants, by code: exactly what this test drove
            then = RESOLVES.replace('"})', f'"}} @ {before:.3f})')
            load = f"{RESOLVES} - {then}"
            assert prometheus.by_code(load) == {"OK": 50, "NOT_FOUND": 12}

            # a worker killed: its calls still count, the replacement's add to them
            os.kill(first.pid, signal.SIGKILL)
            await resolve(second, "default/m@production", 10)
            await eventually(lambda: prometheus.by_code(RESOLVES), {"OK": 61, "NOT_FOUND": 13})

            rules = prometheus.api("rules")["groups"]
            assert {r["health"] for g in rules for r in g["rules"]} == {"ok"}
            check_dashboard(prometheus, metrics)
        finally:
            stream.cancel()
            prometheus.stop()


def check_dashboard(prometheus: Prometheus, metrics: str) -> None:
    """Every dashboard query runs, and every series it names is exposed."""
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as reply:
        exposed = set(re.findall(r"^(modelreg_\w+)", reply.read().decode(), re.M))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    for expr in exprs:
        names = set(re.findall(r"modelreg_\w+", expr))
        assert names <= exposed, f"{expr}: {names - exposed} not exposed"
        prometheus.api("query", query=expr.replace("$__rate_interval", "1m"))


def test_the_shipped_rules_and_config_pass_promtool() -> None:
    promtool = binary("promtool")
    rules = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = subprocess.run([promtool, "check", "config", str(RULES.parent / "prometheus.yml")],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert config.returncode == 0, config.stdout + config.stderr
