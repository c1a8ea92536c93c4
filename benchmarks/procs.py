"""Processes the benchmark programs start: a free port to give one, waiting until it
listens, and stopping it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop(proc: subprocess.Popen[Any], timeout: float = 15) -> None:
    """Terminate a process we started; kill it if it is still there after `timeout` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Wait until something listens on `port`; exit with the log's tail if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"a server exited at start (code {proc.returncode}):\n{tail}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listened on port {port}")


@contextmanager
def process(
    args: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[int]:
    """A server process listening on `port`, stopped on exit; its stderr goes to `log` (a
    pipe nobody reads would stall a server that logs every request, as moto does)."""
    with log.open("wb") as errors:
        proc = subprocess.Popen(
            args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=errors
        )
    try:
        wait_port(port, proc, log)
        yield proc.pid
    finally:
        stop(proc, timeout=30)
