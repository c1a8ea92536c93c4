"""ListModels' filter (AIP-160 over a model's fields): every filter of a table answers
what a brute-force evaluation of the rules gives over the same models, in the listing's
order and across pages; it is ANDed with the older prefix and tag fields; a version's
fields and bad filters are INVALID_ARGUMENT with a position."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from modelreg.client import AsyncClient
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from tests.integration.test_push_pull import run_cli
from tests.integration.test_search import cmp

pytestmark = pytest.mark.usefixtures("clean")
Row = dict[str, Any]
TEAMS = ["vision", "nlp", "Vision", "видение", ""]
NS = "namespaces/default"


async def seed(stub: rs_grpc.RegistryServiceAsyncStub, count: int = 24) -> tuple[list[Row], str]:
    """Models with labels (sometimes missing), tags and aliases; a third updated after a
    mark in time (returned), so update_time and create_time differ."""
    rows: list[Row] = []
    for i in range(count):
        labels = {"team": TEAMS[i % len(TEAMS)]} if i % 4 != 3 else {}
        if i % 3 == 0:
            labels["tier"] = "gold"
        tags = ["baseline"] if i % 4 == 0 else ["candidate", "v1.2/x"][: 1 + i % 2]
        made = await stub.CreateModel(rs.CreateModelRequest(
            parent=NS, model_id=f"m{i:02d}", model=pb.Model(labels=labels, tags=tags)
        ))  # fmt: skip
        row: Row = {"model": f"m{i:02d}", "labels": labels, "tags": tags, "aliases": set(),
               "create_time": made.model.create_time.ToDatetime(UTC)}  # fmt: skip
        rows.append(row)
        if i % 5 == 1:  # an alias on a version of some models
            name = f"{NS}/models/m{i:02d}"
            ready = pb.ModelVersion(state=pb.MODEL_VERSION_STATE_READY)
            await stub.CreateModelVersion(rs.CreateModelVersionRequest(parent=name, version=ready))
            alias = "production" if i % 2 else "staging"
            alias_name = f"{name}/aliases/{alias}"
            await stub.SetAlias(rs.SetAliasRequest(name=alias_name, version_number=1))
            row["aliases"].add(alias)
    await asyncio.sleep(0.01)
    mark = datetime.now(UTC)
    await asyncio.sleep(0.01)
    for row in rows[::3]:
        await stub.UpdateModel(rs.UpdateModelRequest(
            model=pb.Model(name=f"{NS}/models/{row['model']}", description="touched"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        ))  # fmt: skip
        row["updated"] = True
    return rows, mark.isoformat().replace("+00:00", "Z")


def filters(mark: str) -> list[tuple[str, Callable[[Row], bool]]]:
    """(filter, reference predicate): what the documented rules say."""
    return [
        ("", lambda r: True),
        ("labels.team = vision", lambda r: r["labels"].get("team") == "vision"),
        ('labels.team = "видение"', lambda r: r["labels"].get("team") == "видение"),
        ("labels.team != vision", lambda r: cmp(r["labels"].get("team"), "!=", "vision")),
        ("NOT labels.team = vision", lambda r: r["labels"].get("team") != "vision"),
        ("labels.team:*", lambda r: "team" in r["labels"]),
        ('labels.team < "w"', lambda r: cmp(r["labels"].get("team"), "<", "w")),
        ("labels.tier = gold OR tags:baseline",
         lambda r: r["labels"].get("tier") == "gold" or "baseline" in r["tags"]),
        ('tags:"v1.2/x" AND NOT labels.tier:*',
         lambda r: "v1.2/x" in r["tags"] and "tier" not in r["labels"]),
        ("alias:*", lambda r: bool(r["aliases"])),
        ("alias = production", lambda r: "production" in r["aliases"]),
        ("NOT alias:*", lambda r: not r["aliases"]),
        ('name >= "m10" AND name < "m20"', lambda r: "m10" <= r["model"] < "m20"),
        (f'update_time > "{mark}"', lambda r: bool(r.get("updated"))),
        (f'create_time < "{mark}" AND NOT update_time > "{mark}"',
         lambda r: not r.get("updated")),
        ("namespace = default", lambda r: True),
        ("namespace = lab", lambda r: False),
    ]  # fmt: skip


async def list_all(stub: rs_grpc.RegistryServiceAsyncStub, **request: Any) -> list[str]:
    names: list[str] = []
    token = ""
    while True:
        reply = await stub.ListModels(
            rs.ListModelsRequest(parent=NS, page_token=token, page_size=4, **request)
        )
        names += [m.name.rsplit("/", 1)[1] for m in reply.models]
        token = reply.next_page_token
        if not token:
            return names


async def test_each_model_filter_matches_what_the_rules_say(
    stub: rs_grpc.RegistryServiceAsyncStub,
) -> None:
    rows, mark = await seed(stub)
    table = filters(mark)
    wrong = []
    for text, predicate in table:
        for order, key in (("", "model"), ("create_time desc", "create_time")):
            got = await list_all(stub, filter=text, order_by=order)
            ordered = sorted(rows, key=lambda r: r[key], reverse=bool(order))
            expected = [r["model"] for r in ordered if predicate(r)]
            if got != expected:
                wrong.append(f"{text!r} ({order or 'name'}): {got} != {expected}")
    assert not wrong, "\n".join(wrong)
    partial = [t for t, p in table if 0 < sum(map(p, rows)) < len(rows)]
    assert len(partial) >= len(table) - 3  # "", the two namespace rows


async def test_the_filter_ands_with_prefix_and_tags_and_binds_the_page_token(
    stub: rs_grpc.RegistryServiceAsyncStub,
) -> None:
    rows, _ = await seed(stub, count=16)
    got = await list_all(stub, filter="labels.team:*", name_prefix="m1", tags=["candidate"])
    assert got == [r["model"] for r in rows if "team" in r["labels"]
                   and r["model"].startswith("m1") and "candidate" in r["tags"]]  # fmt: skip
    first = await stub.ListModels(
        rs.ListModelsRequest(parent=NS, page_size=2, filter="labels.team:*")
    )
    assert first.next_page_token
    # the same filter however spelled continues; another one is refused
    again = await stub.ListModels(rs.ListModelsRequest(
        parent=NS, page_size=2, filter="labels.team : *  ", page_token=first.next_page_token
    ))  # fmt: skip
    assert again.models
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListModels(rs.ListModelsRequest(
            parent=NS, page_size=2, filter="labels.tier:*", page_token=first.next_page_token
        ))  # fmt: skip
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (caught.value.details() or "")


BAD = [
    ("state = READY", 0, "unknown field 'state'"),
    ("metrics.auc > 0.9", 0, "unknown field 'metrics'"),
    ("run_id = x", 0, "unknown field 'run_id'"),
    ("labels.team = ", 14, "expected a value"),
    ("alias > production", 6, "alias takes '=' or ':'"),
    ("(labels.team = x", 16, "expected ')'"),
]


@pytest.mark.parametrize(("text", "position", "says"), BAD)
async def test_a_bad_model_filter_is_invalid_argument_naming_its_position(
    stub: rs_grpc.RegistryServiceAsyncStub, text: str, position: int, says: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListModels(rs.ListModelsRequest(parent=NS, filter=text))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert f"at position {position}:" in details, details
    assert says in details, details


async def test_the_sdk_and_the_cli_filter_models(
    stub: rs_grpc.RegistryServiceAsyncStub, target: str
) -> None:
    rows, _ = await seed(stub, count=10)
    gold = [r["model"] for r in rows if r["labels"].get("tier") == "gold"]
    async with AsyncClient(target) as client:
        found = [m.name async for m in client.list_models(filter="labels.tier = gold")]
    assert [n.rsplit("/", 1)[1] for n in found] == gold
    status, out, err = await run_cli(
        "models", "list", "default", "--filter", "alias:*", "--json", target=target
    )
    assert status == 0, err
    assert [m["name"].rsplit("/", 1)[1] for m in json.loads(out)] == [
        r["model"] for r in rows if r["aliases"]
    ]
    status, out, err = await run_cli("models", "list", "--filter", "state = READY", target=target)
    assert status != 0
    assert "unknown field 'state'" in err
