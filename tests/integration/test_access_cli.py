"""`modelreg access grant|revoke|list|explain` and the SDK's methods for them, against the
shared server (authentication off there, so the calls are admitted as declared; what is
checked is the plumbing: requests, replies and what the CLI prints)."""

from __future__ import annotations

import uuid

from modelreg.client import AsyncClient
from tests.integration.test_push_pull import run_cli


async def _ok(target: str, *args: str) -> str:
    status, out, err = await run_cli(*args, target=target)
    assert status == 0, f"modelreg {' '.join(args)}: {err}"
    return out


async def test_the_access_commands(target: str) -> None:
    ns, who = f"c{uuid.uuid4().hex[:8]}", f"p{uuid.uuid4().hex[:8]}"
    out = await _ok(target, "access", "grant", "editor", who, "--namespace", ns)
    assert out.startswith(f"granted editor for {who} in namespace {ns} (revision ")
    out = await _ok(target, "access", "grant", "viewer", "team", "--group", "--namespace", ns)
    assert f"viewer for group team in namespace {ns}" in out
    out = await _ok(target, "access", "list", "--namespace", ns)
    assert who in out
    assert "team" in out
    # the caller of a server without authentication holds no binding: it may not ask
    # about others (access.read), and the CLI says what to ask for
    status, _, err = await run_cli(
        "access", "explain", "SetAlias", f"{ns}/m@prod", "--principal", who, target=target
    )
    assert status != 0
    assert "may not access.read" in err
    assert "modelreg access grant admin" in err
    out = await _ok(target, "access", "explain", "GetModel", f"namespaces/{ns}/models/m")
    assert out.startswith("DENIED: ")
    assert "permission: models.read" in out
    out = await _ok(target, "access", "revoke", "editor", who, "--namespace", ns)
    assert out.startswith(f"revoked editor for {who} in namespace {ns}")


async def test_the_sdk_methods(target: str) -> None:
    ns, who = f"s{uuid.uuid4().hex[:8]}", f"p{uuid.uuid4().hex[:8]}"
    async with AsyncClient(target) as client:
        made = await client.grant("approver", who, namespace=ns)
        assert made.revision > 0
        listed = [b async for b in client.list_bindings(subject=who, page_size=1)]
        assert [(b.subject, b.namespace) for b in listed] == [(who, ns)]
        mine = await client.explain_access("GetModel", f"namespaces/{ns}/models/m")
        assert not mine.allowed  # the anonymous caller holds no binding
        assert mine.permission == "models.read"
        gone = await client.revoke("approver", who, namespace=ns)
        assert gone.revision > made.revision
