"""Search (AIP-160 filters): every filter of a table answers what a brute-force evaluation
of the documented rules (domain/filters.py) gives over the same rows; pages return each
match once while rows are inserted; bad filters are INVALID_ARGUMENT with a position."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Callable
from datetime import UTC
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from modelreg.client import AsyncClient
from modelreg.client import lineage as lineage_calls
from modelreg.v1 import lineage_service_pb2 as ln
from modelreg.v1 import lineage_service_pb2_grpc as ln_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as pb
from tests.helpers import rich_status
from tests.integration.test_push_pull import run_cli

pytestmark = pytest.mark.usefixtures("clean")
Row = dict[str, Any]
READY, PENDING, ARCHIVED = "READY", "PENDING", "ARCHIVED"
TEAMS = ["vision", "nlp", "Vision", "видение", ""]


async def seed(stub: rs_grpc.RegistryServiceAsyncStub, *, versions: int = 48) -> list[Row]:
    """Versions over three models in two namespaces, with labels, metrics, params, tags,
    run ids and aliases drawn so that keys are sometimes missing."""
    rng = random.Random(7)
    await stub.CreateNamespace(rs.CreateNamespaceRequest(namespace_id="lab"))
    models = [("default", "resnet"), ("default", "bert"), ("lab", "resnet")]
    for ns, model in models:
        await stub.CreateModel(rs.CreateModelRequest(parent=f"namespaces/{ns}", model_id=model))
    rows: list[Row] = []
    for i in range(versions):
        ns, model = models[i % 3]
        version = pb.ModelVersion(
            state=pb.MODEL_VERSION_STATE_READY if i % 5 else pb.MODEL_VERSION_STATE_PENDING
        )
        if i % 4 != 3:
            version.labels["team"] = TEAMS[i % len(TEAMS)]
        if i % 3 == 0:
            version.labels["tier"] = "gold"
        if i % 2 == 0:
            version.metrics["accuracy"] = round(rng.uniform(0.5, 1.0), 3)
        if i % 7:
            version.metrics["loss"] = round(rng.uniform(-1, 1), 3)
        version.params["lr"] = ["0.1", "0.01", "1e-3", "fast", "10", "NaN", " 5", "inf"][i % 8]
        if i % 6 == 1:
            del version.params["lr"]
        version.tags.extend(["baseline"] if i % 4 == 0 else ["candidate", "v1.2/x"][: 1 + i % 2])
        version.source.run_id = f"run-{i % 9}" if i % 10 else ""
        made = await stub.CreateModelVersion(
            rs.CreateModelVersionRequest(parent=f"namespaces/{ns}/models/{model}", version=version)
        )
        rows.append(_row(made.version))
    for ns, model in models:  # aliases on a few versions
        mine = [r for r in rows if r["ns"] == ns and r["model"] == model and r["state"] == READY]
        for alias, row in zip(("production", "staging"), mine[-2:], strict=False):
            await stub.SetAlias(rs.SetAliasRequest(
                name=f"namespaces/{ns}/models/{model}/aliases/{alias}", version_number=row["number"]
            ))  # fmt: skip
            row["aliases"].add(alias)
    archived = rows[6]
    await stub.ArchiveModelVersion(rs.ArchiveModelVersionRequest(name=archived["name"]))
    archived["state"] = ARCHIVED
    return rows


DIGEST_A = "sha256:" + "a1" * 32
URI_A, URI_B = "s3://data/a", "s3://data/b"


async def add_datasets(channel: grpc.aio.Channel, rows: list[Row]) -> None:
    """Lineage for the `dataset` filter: A (digest and URI) trained some versions and
    evaluated some (a few both), B (a URI only) evaluated others; parent edges, which are
    not datasets, hang off a few more."""
    lineage = ln_grpc.LineageServiceStub(channel)
    trained, evaluated = ln.LINEAGE_EDGE_KIND_TRAINED_ON, ln.LINEAGE_EDGE_KIND_EVALUATED_ON
    for i, row in enumerate(rows):
        edges = []
        if i % 3 == 0:
            edges.append((trained, lineage_calls.dataset(DIGEST_A, uri=URI_A)))
            row["datasets"] |= {DIGEST_A, URI_A}
        if i % 7 == 0:  # i % 21 == 0: one version, one dataset, two edges, one match
            edges.append((evaluated, lineage_calls.dataset(DIGEST_A, uri=URI_A)))
            row["datasets"] |= {DIGEST_A, URI_A}
        if i % 4 == 1:
            edges.append((evaluated, ln.LineageNode(dataset=ln.LineageDataset(uri=URI_B))))
            row["datasets"].add(URI_B)
        if i % 5 == 2 and i > 3:
            edges.append(
                (ln.LINEAGE_EDGE_KIND_DERIVED_FROM, lineage_calls.version(rows[0]["name"]))
            )
        if edges:
            specs = [ln.LineageEdgeSpec(kind=k, target=t) for k, t in edges]
            await lineage.AddLineage(ln.AddLineageRequest(version=row["name"], edges=specs))


def _row(version: pb.ModelVersion) -> Row:
    parts = version.name.split("/")
    return {
        "name": version.name, "ns": parts[1], "model": parts[3], "number": version.number,
        "state": pb.ModelVersionState.Name(version.state).removeprefix("MODEL_VERSION_STATE_"),
        "labels": dict(version.labels), "metrics": dict(version.metrics),
        "params": dict(version.params), "tags": list(version.tags),
        "run_id": version.source.run_id, "create_time": version.create_time.ToDatetime(UTC),
        "aliases": set(), "datasets": set(),
    }  # fmt: skip


def _number(text: str | None) -> float | None:
    """A param as a number if it is a plain decimal (filters.py), else None."""
    if text is None or not re.fullmatch(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        return None
    return float(text)


def cmp(a: Any, op: str, b: Any) -> bool:
    """A comparison as filters.py defines it: false when either side is missing."""
    if a is None or b is None:
        return False
    return bool({"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op])


# (filter, reference predicate): the reference is what the documented rules say.
FILTERS: list[tuple[str, Callable[[Row], bool]]] = [
    ("", lambda r: True),
    ('labels.team = "vision"', lambda r: r["labels"].get("team") == "vision"),
    ("labels.team = vision", lambda r: r["labels"].get("team") == "vision"),
    ('labels.team = "видение"', lambda r: r["labels"].get("team") == "видение"),
    ('labels.team != "vision"', lambda r: cmp(r["labels"].get("team"), "!=", "vision")),
    ('NOT labels.team = "vision"', lambda r: r["labels"].get("team") != "vision"),
    ("labels.team:*", lambda r: "team" in r["labels"]),
    ("NOT labels.team:*", lambda r: "team" not in r["labels"]),
    ('labels.team:""', lambda r: r["labels"].get("team") == ""),
    ('labels.team < "w"', lambda r: cmp(r["labels"].get("team"), "<", "w")),
    ("labels.tier = gold AND labels.team = nlp",
     lambda r: r["labels"].get("tier") == "gold" and r["labels"].get("team") == "nlp"),
    ("labels.tier = gold OR labels.team = nlp",
     lambda r: r["labels"].get("tier") == "gold" or r["labels"].get("team") == "nlp"),
    ("labels.tier = gold labels.team = nlp",  # juxtaposition is AND
     lambda r: r["labels"].get("tier") == "gold" and r["labels"].get("team") == "nlp"),
    ("metrics.accuracy >= 0.8", lambda r: cmp(r["metrics"].get("accuracy"), ">=", 0.8)),
    ("NOT metrics.accuracy >= 0.8", lambda r: not cmp(r["metrics"].get("accuracy"), ">=", 0.8)),
    ("metrics.loss < 0", lambda r: cmp(r["metrics"].get("loss"), "<", 0)),
    ("metrics.loss > -0.5 AND metrics.loss <= 0.5",
     lambda r: cmp(r["metrics"].get("loss"), ">", -0.5)
     and cmp(r["metrics"].get("loss"), "<=", 0.5)),
    ("metrics.accuracy:*", lambda r: "accuracy" in r["metrics"]),
    ("metrics.missing > 0", lambda r: False),
    ("NOT metrics.missing > 0", lambda r: True),
    ('params.lr = "0.1"', lambda r: r["params"].get("lr") == "0.1"),
    ("params.lr = 0.1", lambda r: _number(r["params"].get("lr")) == 0.1),
    ("params.lr > 0.05", lambda r: cmp(_number(r["params"].get("lr")), ">", 0.05)),
    ("params.lr <= 0.01", lambda r: cmp(_number(r["params"].get("lr")), "<=", 0.01)),
    ('params.lr > "1"', lambda r: cmp(r["params"].get("lr"), ">", "1")),
    ("NOT params.lr > 0.05", lambda r: not cmp(_number(r["params"].get("lr")), ">", 0.05)),
    ('tags:"v1.2/x"', lambda r: "v1.2/x" in r["tags"]),
    ("tags:baseline OR tags:candidate", lambda r: bool({"baseline", "candidate"} & set(r["tags"]))),
    ("run_id = run-3", lambda r: r["run_id"] == "run-3"),
    ('run_id = ""', lambda r: r["run_id"] == ""),
    ("state = READY", lambda r: r["state"] == READY),
    ("state != READY", lambda r: r["state"] != READY),
    ("state = MODEL_VERSION_STATE_ARCHIVED", lambda r: r["state"] == ARCHIVED),
    ("name = resnet AND namespace = lab", lambda r: r["model"] == "resnet" and r["ns"] == "lab"),
    ("number <= 3", lambda r: r["number"] <= 3),
    ("alias:*", lambda r: bool(r["aliases"])),
    ("alias = production", lambda r: "production" in r["aliases"]),
    ("NOT alias:*", lambda r: not r["aliases"]),
    (f'dataset = "{DIGEST_A}"', lambda r: DIGEST_A in r["datasets"]),
    (f'dataset = "{URI_A}"', lambda r: URI_A in r["datasets"]),
    (f'dataset:"{URI_B}"', lambda r: URI_B in r["datasets"]),
    (f'NOT dataset = "{URI_B}"', lambda r: URI_B not in r["datasets"]),
    (f'dataset = "{URI_A}" OR labels.tier = gold AND state = READY',
     lambda r: URI_A in r["datasets"] or (r["labels"].get("tier") == "gold"
                                          and r["state"] == READY)),
    ('dataset = "s3://data/none"', lambda r: False),
    # a required dataset drives the page from version_datasets (store/search.py)
    (f'dataset = "{DIGEST_A}" AND labels.team = vision',
     lambda r: DIGEST_A in r["datasets"] and r["labels"].get("team") == "vision"),
    (f'state = READY AND dataset:"{URI_B}" AND NOT alias:*',
     lambda r: r["state"] == READY and URI_B in r["datasets"] and not r["aliases"]),
    (f'dataset = "{URI_A}" AND dataset = "{URI_B}"',
     lambda r: {URI_A, URI_B} <= r["datasets"]),
    ("-(labels.team = vision OR labels.team = nlp) AND (metrics.accuracy > 0.6 OR tags:baseline)",
     lambda r: r["labels"].get("team") not in ("vision", "nlp")
     and (cmp(r["metrics"].get("accuracy"), ">", 0.6) or "baseline" in r["tags"])),
]  # fmt: skip


async def search_all(stub: rs_grpc.RegistryServiceAsyncStub, **request: Any) -> list[str]:
    names: list[str] = []
    token = ""
    while True:
        reply = await stub.SearchModelVersions(
            rs.SearchModelVersionsRequest(page_token=token, page_size=7, **request)
        )
        names += [v.name for v in reply.versions]
        token = reply.next_page_token
        if not token:
            return names


async def test_each_filter_matches_what_the_rules_say(
    stub: rs_grpc.RegistryServiceAsyncStub, channel: grpc.aio.Channel
) -> None:
    rows = await seed(stub)
    await add_datasets(channel, rows)
    wrong = []
    for text, predicate in FILTERS:
        got = await search_all(stub, filter=text)
        expected = [r["name"] for r in sorted(rows, key=_newest_first) if predicate(r)]
        if got != expected:
            wrong.append(f"{text!r}: {len(got)} answered, {len(expected)} expected")
    assert not wrong, "\n".join(wrong)
    # the table is not vacuous on this seed: most filters match some rows but not all
    partial = [t for t, p in FILTERS if 0 < sum(map(p, rows)) < len(rows)]
    assert len(partial) >= len(FILTERS) - 5  # "", missing keys, an unknown dataset


async def test_dataset_pages_in_every_order_and_within_a_model(
    stub: rs_grpc.RegistryServiceAsyncStub, channel: grpc.aio.Channel, db: Any
) -> None:
    rows = await seed(stub)
    await add_datasets(channel, rows)
    fed = [r for r in rows if URI_A in r["datasets"]]
    oldest = sorted(fed, key=lambda r: (r["create_time"], r["number"]))
    assert await search_all(stub, filter=f'dataset = "{URI_A}"', order_by="create_time asc") \
        == [r["name"] for r in oldest]  # fmt: skip
    by_number = await search_all(stub, filter=f'dataset = "{DIGEST_A}"', order_by="number desc")
    assert [r["number"] for r in _in(rows, by_number)] == sorted(
        (r["number"] for r in fed), reverse=True
    )
    resnet = [r for r in oldest if r["ns"] == "default" and r["model"] == "resnet"]
    assert resnet, "the seed feeds resnet from A"
    names, token = [], ""
    while True:  # one model, newest first, two at a time
        reply = await stub.ListModelVersions(rs.ListModelVersionsRequest(
            parent="namespaces/default/models/resnet", filter=f'dataset = "{URI_A}"',
            order_by="create_time desc", page_size=2, page_token=token,
        ))  # fmt: skip
        names += [v.name for v in reply.versions]
        token = reply.next_page_token
        if not token:
            break
    assert names == [r["name"] for r in reversed(resnet)]
    # the index is exactly the dataset edges: what the migration's backfill rebuilds
    indexed = await db.fetch(
        "SELECT dataset, model_id, number FROM version_datasets ORDER BY 1, 2, 3"
    )
    await db.execute("DELETE FROM version_datasets")
    await db.execute("SELECT modelreg_index_dataset_edge(from_node, to_node) FROM lineage_edges"
                     " WHERE kind IN (4, 5)")  # fmt: skip
    assert await db.fetch("SELECT dataset, model_id, number FROM version_datasets"
                          " ORDER BY 1, 2, 3") == indexed  # fmt: skip
    assert len(indexed) == sum(len(r["datasets"]) for r in rows)


def _newest_first(row: Row) -> tuple[Any, ...]:  # create_time desc, then model_id, number
    return (-row["create_time"].timestamp(), 0, -row["number"])


async def test_times_and_metric_orders(stub: rs_grpc.RegistryServiceAsyncStub) -> None:
    rows = await seed(stub, versions=24)
    middle = sorted(r["create_time"] for r in rows)[12]
    after = await search_all(stub, filter=f'create_time >= "{middle.isoformat()}"')
    assert sorted(after) == sorted(r["name"] for r in rows if r["create_time"] >= middle)
    by_accuracy = await search_all(stub, order_by="metrics.accuracy desc")
    having = [r for r in rows if "accuracy" in r["metrics"]]
    assert [r["metrics"]["accuracy"] for r in _in(rows, by_accuracy)] == sorted(
        (r["metrics"]["accuracy"] for r in having), reverse=True
    )
    ascending = await search_all(stub, order_by="create_time asc", filter="state = READY")
    assert ascending == [r["name"] for r in sorted(rows, key=lambda r: r["create_time"])
                         if r["state"] == READY]  # fmt: skip


def _in(rows: list[Row], names: list[str]) -> list[Row]:
    by_name = {r["name"]: r for r in rows}
    return [by_name[n] for n in names]


async def test_a_filtered_model_listing_keeps_its_number_order_and_states(
    stub: rs_grpc.RegistryServiceAsyncStub,
) -> None:
    rows = await seed(stub, versions=24)
    reply = await stub.ListModelVersions(rs.ListModelVersionsRequest(
        parent="namespaces/default/models/resnet", filter="metrics.accuracy:*",
        states=[pb.MODEL_VERSION_STATE_READY],
    ))  # fmt: skip
    expected = [r["number"] for r in rows if r["ns"] == "default" and r["model"] == "resnet"
                and "accuracy" in r["metrics"] and r["state"] == READY]  # fmt: skip
    assert [v.number for v in reply.versions] == sorted(expected, reverse=True)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListModelVersions(rs.ListModelVersionsRequest(
            parent="namespaces/default/models/nope", filter="state = READY"
        ))  # fmt: skip
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_pages_return_each_match_once_while_rows_are_inserted(
    stub: rs_grpc.RegistryServiceAsyncStub,
) -> None:
    rows = await seed(stub, versions=30)
    before = {r["name"] for r in rows if "team" in r["labels"]}
    inserting = True
    inserted = 0

    async def insert() -> None:
        nonlocal inserted
        while inserting:
            version = pb.ModelVersion(state=pb.MODEL_VERSION_STATE_READY)
            version.labels["team"] = "vision"
            await stub.CreateModelVersion(rs.CreateModelVersionRequest(
                parent="namespaces/default/models/bert", version=version
            ))  # fmt: skip
            inserted += 1
            await asyncio.sleep(0)

    writer = asyncio.create_task(insert())
    try:
        for order in ("create_time desc", "create_time asc", "number desc"):
            names, token = [], ""
            while True:
                reply = await stub.SearchModelVersions(rs.SearchModelVersionsRequest(
                    filter="labels.team:*", order_by=order, page_size=3, page_token=token
                ))  # fmt: skip
                names += [v.name for v in reply.versions]
                token = reply.next_page_token
                await asyncio.sleep(0.005)  # let inserts land between pages
                if not token:
                    break
            duplicates = len(names) - len(set(names))
            assert duplicates == 0, order
            assert before <= set(names), order  # nothing that was there is skipped
    finally:
        inserting = False
        await writer
    assert inserted > 0


BAD: list[tuple[str, int, str]] = [
    ("labels.team = ", 14, "expected a value"),
    ("colour = red", 0, "unknown field 'colour'"),
    ('metrics.accuracy > "high"', 19, "is a number"),
    ("(state = READY", 14, "expected ')'"),
    ("state = READY)", 13, "unexpected ')'"),
    ("state < READY", 6, "state takes"),
    ("state = SHINY", 8, "not a state"),
    ('labels.team = "open', 14, "unterminated string"),
    ("labels = x", 7, "labels needs a key"),
    ("labels.team = x OR", 18, "expected a field"),
    ("number = 1.5", 9, "integer"),
    ("tags = x", 5, 'take ":"'),
    ('create_time > "yesterday"', 14, "RFC 3339"),
    ("create_time > 5", 14, "RFC 3339"),
    ("metrics.loss:0.5", 12, "':' is for"),
    ("name:*", 5, "presence"),
    ("dataset > abc", 8, "dataset takes"),
    ("dataset:*", 8, "presence"),
    ("labels.team = x AND AND y = 1", 20, "expected a field"),
    ("a" + " = 1 OR a" * 70 + " = 1", 0, "unknown field"),
    ("x" * 5000, 4096, "at most 4096"),
    ("labels.team = x @", 16, "unknown field '@'"),
]


@pytest.mark.parametrize(("text", "position", "says"), BAD)
async def test_a_bad_filter_is_invalid_argument_naming_its_position(
    stub: rs_grpc.RegistryServiceAsyncStub, text: str, position: int, says: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SearchModelVersions(rs.SearchModelVersionsRequest(filter=text))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert f"at position {position}:" in details, details
    assert says in details, details
    assert _metadata(rich_status(caught.value)).get("position") == str(position)


def _metadata(status: Any) -> dict[str, str]:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return dict(info.metadata)
    return {}


async def test_the_sdk_and_the_cli_search(
    stub: rs_grpc.RegistryServiceAsyncStub, target: str
) -> None:
    rows = await seed(stub, versions=18)
    gold = sorted(r["name"] for r in rows if r["labels"].get("tier") == "gold")
    async with AsyncClient(target) as client:
        found = [v.name async for v in client.search_versions("labels.tier = gold", page_size=2)]
        assert sorted(found) == gold
        mine = [v.number async for v in client.list_versions(
            "default/resnet", filter="labels.tier = gold", order_by="number"
        )]  # fmt: skip
        assert mine == sorted(r["number"] for r in rows if r["name"] in gold
                              and r["ns"] == "default" and r["model"] == "resnet")  # fmt: skip
    status, out, err = await run_cli("search", "labels.tier = gold", "--json", target=target)
    assert status == 0, err
    assert sorted(v["name"] for v in json.loads(out)) == gold
    status, out, err = await run_cli(
        "versions", "list", "lab/resnet", "--filter", "labels.tier:*", "--json", target=target
    )
    assert status == 0, err
    assert len(json.loads(out)) == len([r for r in rows if r["ns"] == "lab" and r["name"] in gold])
    status, out, err = await run_cli("search", "labels.tier = ", target=target)
    assert status != 0
    assert "at position 14" in err
