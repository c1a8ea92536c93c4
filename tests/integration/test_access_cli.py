"""`modelreg access grant|revoke|list|explain` and the SDK's methods for them, against the
shared server (authentication and authorization on: the CLI and the SDK call with the
session's admin key, and a principal holding no binding calls with a key of its own; what
is checked is the plumbing: requests, replies and what the CLI prints)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import grpc

from modelreg.client import AsyncClient
from modelreg.v1 import identity_service_pb2 as ids
from modelreg.v1 import identity_service_pb2_grpc as ids_grpc
from tests.integration.test_push_pull import run_cli


async def _ok(target: str, *args: str) -> str:
    status, out, err = await run_cli(*args, target=target)
    assert status == 0, f"modelreg {' '.join(args)}: {err}"
    return out


async def _unbound_key(channel: grpc.aio.Channel) -> str:
    """A key for a new principal that holds no binding (made over the admin's channel)."""
    reply = await ids_grpc.IdentityServiceStub(channel).CreateApiKey(
        ids.CreateApiKeyRequest(principal=f"n{uuid.uuid4().hex[:8]}")
    )
    return reply.key


async def _cli_with(token: str, *args: str, target: str) -> tuple[int, str, str]:
    """The CLI in a child process calling with `token`: exit status, stdout, stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env["MODELREG_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelreg", *args, "--target", target,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_access_commands(target: str, channel: grpc.aio.Channel) -> None:
    ns, who = f"c{uuid.uuid4().hex[:8]}", f"p{uuid.uuid4().hex[:8]}"
    out = await _ok(target, "access", "grant", "editor", who, "--namespace", ns)
    assert out.startswith(f"granted editor for {who} in namespace {ns} (revision ")
    out = await _ok(target, "access", "grant", "viewer", "team", "--group", "--namespace", ns)
    assert f"viewer for group team in namespace {ns}" in out
    out = await _ok(target, "access", "list", "--namespace", ns)
    assert who in out
    assert "team" in out
    # the admin may ask about others; the editor just granted may read the namespace
    out = await _ok(target, "access", "explain", "GetModel", f"{ns}/m", "--principal", who)
    assert out.startswith("ALLOWED: ")
    # a caller holding no binding may not ask about others (access.read), and the CLI
    # says what to ask for; about itself it may, and is denied
    nobody = await _unbound_key(channel)
    status, _, err = await _cli_with(
        nobody, "access", "explain", "SetAlias", f"{ns}/m@prod", "--principal", who,
        target=target,
    )  # fmt: skip
    assert status != 0
    assert "may not access.read" in err
    assert "modelreg access grant admin" in err
    status, out, err = await _cli_with(
        nobody, "access", "explain", "GetModel", f"namespaces/{ns}/models/m", target=target
    )
    assert status == 0, err
    assert out.startswith("DENIED: ")
    assert "permission: models.read" in out
    out = await _ok(target, "access", "revoke", "editor", who, "--namespace", ns)
    assert out.startswith(f"revoked editor for {who} in namespace {ns}")


async def test_the_sdk_methods(target: str, channel: grpc.aio.Channel) -> None:
    ns, who = f"s{uuid.uuid4().hex[:8]}", f"p{uuid.uuid4().hex[:8]}"
    async with AsyncClient(target) as client:  # the session's admin key (MODELREG_TOKEN)
        made = await client.grant("approver", who, namespace=ns)
        assert made.revision > 0
        listed = [b async for b in client.list_bindings(subject=who, page_size=1)]
        assert [(b.subject, b.namespace) for b in listed] == [(who, ns)]
        mine = await client.explain_access("GetModel", f"namespaces/{ns}/models/m")
        assert mine.allowed  # the admin's global binding (seed_admin)
        assert mine.principal == "admin"
        assert mine.permission == "models.read"
        async with AsyncClient(target, token=await _unbound_key(channel)) as nobody:
            theirs = await nobody.explain_access("GetModel", f"namespaces/{ns}/models/m")
            assert not theirs.allowed  # a caller holding no binding
            assert theirs.permission == "models.read"
        gone = await client.revoke("approver", who, namespace=ns)
        assert gone.revision > made.revision
