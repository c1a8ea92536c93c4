"""The authorizing gate on the hot path: admissions per second of an L1-hit-shaped call
(GetModelVersion, ResolveReference) through AuthorizingGate, beside OpenGate (auth off),
in the same run, with many bindings held. In process, no network: what authorization
adds to each call's server CPU.

    .venv/bin/python benchmarks/gate.py [--calls 200000] [--bindings 10000]

The authenticator is a fixed-principal double (credentials are the identity helper's
part; their cost adds to this one)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from modelreg.api.authorization import AuthorizingGate
from modelreg.api.identity import OpenGate
from modelreg.domain.access import Binding, BindingKey, Role, SubjectKind
from modelreg.domain.grants import GrantCache
from modelreg.domain.principals import Principal, Proof
from modelreg.v1 import registry_service_pb2 as rs

PRINCIPAL = Principal("svc-serving", Proof.API_KEY, frozenset({"serving", "ml"}))


class FixedAuthenticator:
    async def authenticate(self, context: Any) -> Principal:
        return PRINCIPAL


class Context:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", "Bearer x"),)


def grants(count: int) -> GrantCache:
    cache = GrantCache()
    cache.bindings.replace(
        Binding(BindingKey(Role.VIEWER, SubjectKind.PRINCIPAL, f"user{i}", f"ns{i % 500}"))
        for i in range(count)
    )
    cache.bindings.add(Binding(BindingKey(Role.VIEWER, SubjectKind.GROUP, "serving", "ml")))
    return cache


async def rate(gate: Any, method: str, request: Any, calls: int) -> float:
    context = Context()
    for _ in range(1000):  # warm the memo and the parse caches
        await gate.admit(method, request, context)
    start = time.perf_counter()
    for _ in range(calls):
        await gate.admit(method, request, context)
    return calls / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--bindings", type=int, default=10_000)
    args = parser.parse_args()
    authorizing = AuthorizingGate(FixedAuthenticator(), grants(args.bindings))
    cases = [
        (
            "GetModelVersion",
            "/modelreg.v1.RegistryService/GetModelVersion",
            rs.GetModelVersionRequest(name="namespaces/ml/models/resnet/versions/7"),
        ),
        (
            "ResolveReference",
            "/modelreg.v1.RegistryService/ResolveReference",
            rs.ResolveReferenceRequest(reference="ml/resnet@production"),
        ),
    ]
    results: dict[str, float] = {}
    print(f"{'call':<18} {'gate':<12} {'admits/s':>12} {'us/admit':>9}")
    for label, method, request in cases:
        for name, gate in (("open", OpenGate()), ("authorizing", authorizing)):
            per_second = await rate(gate, method, request, args.calls)
            results[f"{label}.{name}"] = round(per_second)
            print(f"{label:<18} {name:<12} {per_second:>12,.0f} {1e6 / per_second:>9.2f}")
        added = 1e6 / results[f"{label}.authorizing"] - 1e6 / results[f"{label}.open"]
        results[f"{label}.added_us"] = round(added, 2)
    print(json.dumps({"benchmark": "gate", "bindings": args.bindings, **results}))


if __name__ == "__main__":
    asyncio.run(main())
