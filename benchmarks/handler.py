"""What one lookup costs the server without the network: the real interceptor, gate and
servicer of an L1 hit, called in process, with authentication on and off, and with the
metrics' recorder (MODELREG_METRICS_ADDRESS) on top of authentication, in the same run.

    PYTHONPATH=src .venv/bin/python benchmarks/handler.py [--calls 20000] [--rounds 5]

The handlers are the ones `start_server` registers (captured instead of served): each
call goes through what gRPC runs for it after the bytes arrive — the interceptor's
`intercept_service`, the request's deserializer, the wrapped handler (request checks,
the deadline, the gate, the consistency wrapper, the servicer, the cache walk) and the
response's serializer — on an embedded PostgreSQL with the answers in L1. Modes are
interleaved round by round (on, off, on, off...) so drift on a shared machine hits both;
times are the CPU time of the event loop's thread (`time.thread_time`), so other
processes on the machine inflate them less than wall time. The medians of the rounds
are printed with what `auth on` and then the metrics add per call, then one JSON line.
`steps` times the pieces of an authorized hit on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from modelreg.api.authentication import bearer_token
from modelreg.api.identity import Gate, OpenGate
from modelreg.api.interceptors import ErrorInterceptor
from modelreg.api.registry import RegistryServicer, add_registry_service
from modelreg.api.validation import check_request
from modelreg.app import ADMIN_KEY_FILE, _gate, build_services, open_database
from modelreg.config import Settings
from modelreg.domain.identity import parse_key
from modelreg.metrics import Recorder
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as pb

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]

SERVICE = "/modelreg.v1.RegistryService/"
NS, MODEL = "bench", "handler"
AUTH = "authorization"


class Captured:
    """Stands where the grpc.aio server would: keeps the method handlers registered."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same handlers arrive by name below

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers.update({f"/{service}/{name}": h for name, h in handlers.items()})


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = method
        self.invocation_metadata = metadata


class Context:
    """The ServicerContext methods a successful unary call uses."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float:
        return 30.0

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"

    def auth_context(self) -> dict[str, Any]:
        return {}

    async def abort(self, code: grpc.StatusCode, details: str = "", trailers: Any = None) -> None:
        raise RuntimeError(f"the benchmark's call failed: {code.name}: {details}")

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass


class Server:
    """One mode's call path: an interceptor over the captured handlers."""

    def __init__(
        self, handlers: dict[str, Handler], gate: Gate, key: str, recorder: Recorder | None = None
    ):
        self._handlers = handlers
        self._interceptor = ErrorInterceptor(gate, recorder)
        metadata = ((AUTH, f"Bearer {key}"), ("user-agent", "grpc-python-asyncio/bench"))
        self._metadata = metadata
        self.context = Context(metadata)

    async def call(self, name: str, wire: bytes) -> bytes:
        method = SERVICE + name

        async def continuation(details: grpc.HandlerCallDetails) -> Handler:
            return self._handlers[method]

        details = Details(method, self._metadata)
        handler = await self._interceptor.intercept_service(continuation, details)
        assert handler.request_deserializer is not None
        assert handler.unary_unary is not None
        request = handler.request_deserializer(wire)
        response = await handler.unary_unary(request, self.context)  # type: ignore[arg-type]
        serialize = handler.response_serializer
        wire_out: bytes = response if serialize is None else serialize(response)
        return wire_out


async def per_call_us(server: Server, name: str, wire: bytes, calls: int) -> float:
    start = time.thread_time()
    for _ in range(calls):
        await server.call(name, wire)
    return (time.thread_time() - start) / calls * 1e6


def step_us(step: Callable[[], Any], calls: int) -> float:
    start = time.thread_time()
    for _ in range(calls):
        step()
    return (time.thread_time() - start) / calls * 1e6


async def astep_us(step: Callable[[], Awaitable[Any]], calls: int) -> float:
    start = time.thread_time()
    for _ in range(calls):
        await step()
    return (time.thread_time() - start) / calls * 1e6


async def seed(server: Server) -> dict[str, bytes]:
    """A namespace, a model, a version and `production` on it, made through the handlers;
    the lookups' wire requests."""
    await server.call(
        "CreateNamespace", rs.CreateNamespaceRequest(namespace_id=NS).SerializeToString()
    )
    model = f"namespaces/{NS}/models/{MODEL}"
    create_model = rs.CreateModelRequest(parent=f"namespaces/{NS}", model_id=MODEL)
    await server.call("CreateModel", create_model.SerializeToString())
    version = rs.CreateModelVersionRequest(
        parent=model,
        version=pb.ModelVersion(
            description="a version of some size",
            labels={"team": "serving", "tier": "gold"},
            state=pb.MODEL_VERSION_STATE_READY,
        ),
    )
    await server.call("CreateModelVersion", version.SerializeToString())
    alias = rs.SetAliasRequest(name=f"{model}/aliases/production", version_number=1)
    await server.call("SetAlias", alias.SerializeToString())
    lookups = {
        "GetModelVersion": rs.GetModelVersionRequest(name=f"{model}/versions/1"),
        "ResolveReference": rs.ResolveReferenceRequest(reference=f"{NS}/{MODEL}@production"),
    }
    return {name: request.SerializeToString() for name, request in lookups.items()}


async def steps(on: Server, gate: Gate, wire: bytes, calls: int) -> dict[str, float]:
    """The pieces of an authorized ResolveReference hit, each on its own."""
    context = on.context
    request = rs.ResolveReferenceRequest.FromString(wire)
    token = bearer_token(context)  # type: ignore[arg-type]
    assert token is not None
    method = SERVICE + "ResolveReference"

    async def admit() -> Any:
        return await gate.admit(method, request, context)  # type: ignore[arg-type]

    async def timeout() -> None:
        async with asyncio.timeout(30.0):  # noqa: ASYNC100 - the cost of entering is the point
            pass

    return {
        "deserialize": step_us(lambda: rs.ResolveReferenceRequest.FromString(wire), calls),
        "check_request": step_us(lambda: check_request(request), calls),
        "asyncio.timeout": await astep_us(timeout, calls),
        "bearer_token": step_us(lambda: bearer_token(context), calls),  # type: ignore[arg-type]
        "parse_key": step_us(lambda: parse_key(token), calls),
        "gate.admit (authn + authz)": await astep_us(admit, calls),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per round and mode")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres-url", help="a database to use (default: embedded, temporary)")
    args = parser.parse_args()
    async with AsyncExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="handler-bench-")))
        overrides: dict[str, Any] = {"home": home, "auth": "on", "redis_url": None}
        if args.postgres_url:
            overrides["postgres_url"] = args.postgres_url
        settings = Settings.from_env({}, **overrides)
        database = await open_database(settings, stack)
        services = await build_services(settings, stack, database, authorizing=True)
        gate = await _gate(settings, services, stack)
        assert services.consistency is not None
        assert services.grants is not None
        key = (home / ADMIN_KEY_FILE).read_text().strip()
        captured: dict[str, dict[str, Handler]] = {}
        for mode, grants in (("on", services.grants), ("off", None)):
            capture = Captured()
            servicer = RegistryServicer(services.registry, grants=grants)
            add_registry_service(servicer, capture, consistency=services.consistency)  # type: ignore[arg-type]
            captured[mode] = capture.handlers
        servers = {
            "on": Server(captured["on"], gate, key),
            "off": Server(captured["off"], OpenGate(), key),
            "metrics": Server(captured["on"], gate, key, Recorder(services.stats)),
        }
        wires = await seed(servers["on"])
        results: dict[str, dict[str, list[float]]] = {}
        for name, wire in wires.items():
            for server in servers.values():  # L1 filled, memos warm
                await per_call_us(server, name, wire, 2000)
            rounds = results.setdefault(name, {mode: [] for mode in servers})
            for _ in range(args.rounds):
                for mode, server in servers.items():
                    rounds[mode].append(await per_call_us(server, name, wire, args.calls))
        parts = await steps(servers["on"], gate, wires["ResolveReference"], args.calls)
    summary: dict[str, Any] = {"benchmark": "handler", "calls": args.calls, "rounds": args.rounds}
    print(f"{'call':<18} {'auth off us':>12} {'auth on us':>11} {'added us':>9} {'on/off':>7}"
          f" {'+metrics us':>12} {'added us':>9}")  # fmt: skip
    for name, rounds in results.items():
        off, on = statistics.median(rounds["off"]), statistics.median(rounds["on"])
        measured = statistics.median(rounds["metrics"])
        print(f"{name:<18} {off:>12.2f} {on:>11.2f} {on - off:>9.2f} {on / off:>7.3f}"
              f" {measured:>12.2f} {measured - on:>9.2f}")  # fmt: skip
        summary[name] = {
            "off_us": round(off, 2),
            "on_us": round(on, 2),
            "added_us": round(on - off, 2),
            "metrics_us": round(measured, 2),
            "metrics_added_us": round(measured - on, 2),
        }
    print(f"\n{'step of an authorized ResolveReference hit':<44} {'us':>7}")
    for step, us in parts.items():
        print(f"{step:<44} {us:>7.2f}")
    summary["steps_us"] = {step: round(us, 2) for step, us in parts.items()}
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
