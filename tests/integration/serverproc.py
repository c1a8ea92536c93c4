"""Run `modelreg serve` as a real process, as users and the two-server tests do."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import ADMIN_TOKEN, free_port


class ServerProcess:
    """A `python -m modelreg serve` child process with its log in a file."""

    def __init__(self, log: Path, **env: str) -> None:
        # MODELREG_ADDRESS given: that port (a restarted server takes its predecessor's)
        given = env.pop("MODELREG_ADDRESS", "")
        self.port = int(given.rpartition(":")[2]) if given else free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log = log
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
        full_env |= {"MODELREG_WORKERS": "1", "MODELREG_GRACE_SECONDS": "5"}
        full_env["MODELREG_HOME"] = str(log.with_suffix(".home"))  # never the user's own data
        full_env |= env | {"MODELREG_ADDRESS": self.target}
        self.home = Path(full_env["MODELREG_HOME"])
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modelreg", "serve"], env=full_env, stdout=out, stderr=out
            )

    def wait_serving(
        self, timeout: float = 60, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        """Poll health until SERVING (over TLS with `credentials`, for a TLS listener)."""
        deadline = time.monotonic() + timeout
        if credentials is None:
            channel = grpc.insecure_channel(self.target)
        else:
            channel = grpc.secure_channel(self.target, credentials)
        with channel as chan:
            stub = health_pb2_grpc.HealthStub(chan)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited {self.proc.returncode}:\n{self.output()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)  # polls health until SERVING; the interval orders nothing
        raise AssertionError(f"server not SERVING after {timeout}s:\n{self.output()}")

    def wait_workers(self, count: int, timeout: float = 120) -> None:
        """Wait until `count` worker processes have logged that they serve (each logs
        "modelreg serving on" once its port accepts calls)."""
        deadline = time.monotonic() + timeout
        while self.output().count("modelreg serving on") < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} workers serve:\n{self.output()}")
            time.sleep(0.1)  # polls the log; the interval orders nothing

    @property
    def token(self) -> str:
        """The key to call it with: the one its first start wrote into its home (a fresh
        embedded database), else the session's (a seeded test database)."""
        try:
            return (self.home / "admin.key").read_text().strip()
        except FileNotFoundError:
            return ADMIN_TOKEN

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout)
