"""Request builders for LineageService (each builder's docstring is its method's).
Versions are named by reference (`ns/model:7`) or resource name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from modelreg.client.calls import LINEAGE, Call, Pages
from modelreg.v1 import lineage_service_pb2 as ln

KINDS = {
    "derived_from": ln.LINEAGE_EDGE_KIND_DERIVED_FROM,
    "fine_tuned_from": ln.LINEAGE_EDGE_KIND_FINE_TUNED_FROM,
    "distilled_from": ln.LINEAGE_EDGE_KIND_DISTILLED_FROM,
    "trained_on": ln.LINEAGE_EDGE_KIND_TRAINED_ON,
    "evaluated_on": ln.LINEAGE_EDGE_KIND_EVALUATED_ON,
    "produced_by": ln.LINEAGE_EDGE_KIND_PRODUCED_BY,
    "built_from": ln.LINEAGE_EDGE_KIND_BUILT_FROM,
}
DIRECTIONS = {"up": ln.LINEAGE_DIRECTION_UP, "down": ln.LINEAGE_DIRECTION_DOWN,
              "both": ln.LINEAGE_DIRECTION_BOTH}  # fmt: skip


def dataset(digest: str, *, uri: str = "", name: str = "", version: str = "") -> ln.LineageNode:
    """A dataset node, found by its content digest (`sha256:<hex>`)."""
    return ln.LineageNode(
        dataset=ln.LineageDataset(digest=digest, uri=uri, name=name, version=version)
    )


def run(
    system: str, external_id: str, *, uri: str = "", parameters: Mapping[str, str] | None = None
) -> ln.LineageNode:
    """A run node: its system (`mlflow`, `airflow`, ...) and its id there."""
    return ln.LineageNode(run=ln.LineageRun(
        system=system, external_id=external_id, uri=uri, parameters=dict(parameters or {})
    ))  # fmt: skip


def code(repository: str, commit: str) -> ln.LineageNode:
    """A code node: a repository and a commit."""
    return ln.LineageNode(code=ln.LineageCode(repository=repository, commit=commit))


def version(reference: str) -> ln.LineageNode:
    """A parent version node (`ns/model:7` or a version resource name)."""
    return ln.LineageNode(version=reference)


def add_lineage(
    version: str, edges: Iterable[tuple[str, ln.LineageNode]], *, timeout: float | None = None
) -> Call[list[ln.LineageEdge]]:
    """Record edges from `version`: pairs of a kind (`trained_on`, `fine_tuned_from`, ...)
    and a node (`dataset(...)`, `run(...)`, `code(...)`, `version(...)`). An edge already
    recorded adds nothing, so this is safe to retry; returns the edges it added."""
    specs = [ln.LineageEdgeSpec(kind=_kind(kind), target=node) for kind, node in edges]
    request = ln.AddLineageRequest(version=version, edges=specs)
    return Call("AddLineage", request, lambda r: list(r.added), True, timeout, LINEAGE)


def lineage(
    reference: str = "",
    *,
    dataset_digest: str = "",
    dataset_uri: str = "",
    direction: str = "up",
    max_depth: int = 10,
    kinds: Iterable[str] = (),
    page_size: int | None = None,
    timeout: float | None = None,
) -> Pages[ln.LineageEdge]:
    """Iterate over the edges reached from a version (`reference`, e.g.
    `ns/model@production`) or a dataset (`dataset_digest`, or `dataset_uri`: every dataset
    recorded there), nearest first: `up` toward what it came from, `down` toward what came
    from it (a dataset's impact), or `both`."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction is one of {', '.join(DIRECTIONS)}, not {direction!r}")
    kind_values = [_kind(k) for k in kinds]

    def page(token: str) -> ln.GetLineageRequest:
        request = ln.GetLineageRequest(
            direction=DIRECTIONS[direction], max_depth=max_depth, kinds=kind_values,
            page_size=page_size or 0, page_token=token,
        )  # fmt: skip
        if dataset_digest:
            request.dataset_digest = dataset_digest
        elif dataset_uri:
            request.dataset_uri = dataset_uri
        else:
            request.reference = reference
        return request

    return Pages("GetLineage", page, lambda r: r.edges, timeout, LINEAGE)


def node_key(node: ln.LineageNode) -> str:
    """What identifies a node, as text: a version's name, a dataset's digest (else its
    URI), a run's system and id, code's repository and commit."""
    which = node.WhichOneof("node")
    if which == "version":
        return node.version
    if which == "dataset":
        return f"dataset {node.dataset.digest or node.dataset.uri}"
    if which == "run":
        return f"run {node.run.system} {node.run.external_id}"
    if which == "code":
        return f"code {node.code.repository}@{node.code.commit}"
    return ""


def diff(
    first: Iterable[ln.LineageEdge], second: Iterable[ln.LineageEdge]
) -> tuple[list[ln.LineageEdge], list[ln.LineageEdge]]:
    """The lineage difference of two walks: the edges whose (kind, target) only the first
    reaches, and those only the second reaches, each nearest first. Which version an edge
    hangs from does not count: two versions trained on the same dataset share it."""
    first, second = list(first), list(second)

    def keys(edges: list[ln.LineageEdge]) -> set[tuple[int, str]]:
        return {(edge.kind, node_key(edge.target)) for edge in edges}

    def only(edges: list[ln.LineageEdge], other: set[tuple[int, str]]) -> list[ln.LineageEdge]:
        seen: set[tuple[int, str]] = set()
        kept = []
        for edge in edges:
            key = (edge.kind, node_key(edge.target))
            if key not in other and key not in seen:
                seen.add(key)
                kept.append(edge)
        return kept

    return only(first, keys(second)), only(second, keys(first))


def _kind(kind: str) -> ln.LineageEdgeKind.ValueType:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"a lineage kind is one of {', '.join(KINDS)}, not {kind!r}") from None
