"""Page tokens are signed with one key per deployment, kept in its database: a token one
server issued is read by another server of the same database (another worker or
replica), and the key is made once."""

from __future__ import annotations

import asyncpg
import grpc
import pytest

from modelreg.store.secrets import shared_secret
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from tests.helpers import make_model, rich_status, violations_of
from tests.integration.conftest import ArtifactServer


async def test_a_token_from_one_server_continues_on_another(
    clean: None, stub: rs_grpc.RegistryServiceAsyncStub, fs_server: ArtifactServer
) -> None:
    for name in ("a", "b", "c"):
        await make_model(stub, name)
    ordered = rs.ListModelsRequest(parent="namespaces/default", order_by="create_time", page_size=2)
    page = await stub.ListModels(ordered)
    assert page.next_page_token
    ordered.page_token = page.next_page_token
    rest = await fs_server.registry.ListModels(ordered)  # another server process's pool
    names = [m.name.rsplit("/", 1)[1] for m in [*page.models, *rest.models]]
    assert names == ["a", "b", "c"]


async def test_a_token_signed_with_another_key_is_not_ours(
    clean: None, stub: rs_grpc.RegistryServiceAsyncStub
) -> None:
    await make_model(stub, "a")
    await make_model(stub, "b")
    page = await stub.ListModels(rs.ListModelsRequest(parent="namespaces/default", page_size=1))
    body, mac = page.next_page_token.split(".")
    forged = f"{body}.{'A' * len(mac)}"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListModels(
            rs.ListModelsRequest(parent="namespaces/default", page_size=1, page_token=forged)
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations_of(rich_status(caught.value)) == ["page_token"]
    assert "not a page token this server issued" in (caught.value.details() or "")


async def test_the_key_is_made_once_and_kept(database_url: str, db: asyncpg.Connection) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        again = await shared_secret(pool, name="page_token")
    finally:
        await pool.close()
    stored = await db.fetch("SELECT value FROM server_secrets WHERE name = 'page_token'")
    assert [row["value"] for row in stored] == [again]
    assert len(again) == 32
