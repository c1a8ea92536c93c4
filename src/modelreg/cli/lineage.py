"""`modelreg lineage`: where a version came from as a tree, a dataset's impact, the
lineage difference of two versions, adding edges, and importing OpenLineage events.

`modelreg lineage REF` is short for `modelreg lineage show REF` (see `shorthand`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from itertools import islice

from google.protobuf import struct_pb2
from google.protobuf.json_format import MessageToDict

from modelreg.cli.commands import Commands, add_limit
from modelreg.cli.output import Output, Summary
from modelreg.cli.progress import progress_bar
from modelreg.client import Client
from modelreg.client import lineage as calls
from modelreg.client.openlineage import EventError, edges_of, read_events
from modelreg.v1 import lineage_service_pb2 as ln

COMMANDS = ("show", "diff", "add", "import")
_VERSION_PREFIX = "namespaces/"


def shorthand(argv: Sequence[str]) -> list[str]:
    """`lineage REF ...` -> `lineage show REF ...` (a first word that is neither one of
    its commands nor an option); anything else is left as it is."""
    words = list(argv)
    if len(words) >= 2 and words[0] == "lineage":
        first = words[1]
        if first not in COMMANDS and not first.startswith("-"):
            words.insert(1, "show")
    return words


def _edges(
    client: Client, args: argparse.Namespace, direction: str, ref: str = ""
) -> list[ln.LineageEdge]:
    items = client.lineage(
        ref if not (args.dataset_digest or args.dataset_uri) else "",
        dataset_digest=args.dataset_digest or "",
        dataset_uri=args.dataset_uri or "",
        direction=direction,
        max_depth=args.depth,
        kinds=args.kind or (),
        page_size=min(args.limit, 1000) if args.limit else None,
    )
    return list(islice(items, args.limit))


def _show(client: Client, args: argparse.Namespace) -> Output:
    if not (args.ref or args.dataset_digest or args.dataset_uri):
        raise SystemExit("error: give REF, --dataset-digest or --dataset-uri")
    start = _start_node(args)
    directions = ["up", "down"] if args.both else ["down" if args.down else "up"]
    sections: list[str] = []
    everything = ln.GetLineageResponse(start=start)
    for direction in directions:
        edges = _edges(client, args, direction, args.ref or "")
        everything.edges.extend(edges)
        lines = list(tree(start, edges, down=direction == "down"))
        if len(directions) > 1:
            lines.insert(0, "upstream:" if direction == "up" else "downstream:")
        sections.append("\n".join(lines))
    return Summary(everything, "\n".join(sections))


def _start_node(args: argparse.Namespace) -> ln.LineageNode:
    if args.dataset_digest or args.dataset_uri:
        return ln.LineageNode(
            dataset=ln.LineageDataset(digest=args.dataset_digest or "", uri=args.dataset_uri or "")
        )
    return ln.LineageNode(version=args.ref)


def tree(start: ln.LineageNode, edges: Sequence[ln.LineageEdge], *, down: bool) -> Iterator[str]:
    """The walk's edges as a tree under `start`: up, each node's children are what it came
    from; down, what came from it. A version reached twice is expanded once."""
    children: dict[str, list[ln.LineageEdge]] = {}
    for edge in edges:  # the start's own edges are those at depth 1 (a reference, a URI)
        parent = "" if edge.depth == 1 else calls.node_key(edge.target if down else edge.version)
        children.setdefault(parent, []).append(edge)
    first = children.get("", [None])[0]
    if first is not None and start.WhichOneof("node") == "version":  # resolved, with aliases
        start = first.target if down else first.version
    yield label(start)
    expanded = {calls.node_key(start)}

    def below(key: str, indent: str) -> Iterator[str]:
        kids = children.get(key, [])
        for index, edge in enumerate(kids):
            last = index == len(kids) - 1
            node = edge.version if down else edge.target
            node_key = calls.node_key(node)
            again = node_key in expanded and node_key in children
            kind = ln.LineageEdgeKind.Name(edge.kind).removeprefix("LINEAGE_EDGE_KIND_").lower()
            link = f"{kind} by" if down else kind
            suffix = "  (shown above)" if again else ""
            yield f"{indent}{'└── ' if last else '├── '}{link} {label(node)}{suffix}"
            if not again:
                expanded.add(node_key)
                yield from below(node_key, indent + ("    " if last else "│   "))

    yield from below("", "")
    if not edges:
        yield "(no lineage recorded)"


def label(node: ln.LineageNode) -> str:
    """One node as the tree shows it."""
    which = node.WhichOneof("node")
    if which == "version":
        text = short_version(node.version)
        return f"{text} [{', '.join(node.aliases)}]" if node.aliases else text
    if which == "dataset":
        d = node.dataset
        parts = ["dataset", d.uri or d.name]
        if d.digest:
            parts.append(f"({d.digest[:19]}…)" if len(d.digest) > 19 else f"({d.digest})")
        if d.version:
            parts.append(f"version {d.version}")
        return " ".join(p for p in parts if p)
    if which == "run":
        return f"run {node.run.system} {node.run.external_id}"
    if which == "code":
        return f"code {node.code.repository}@{node.code.commit[:12]}"
    return "?"


def short_version(name: str) -> str:
    """`namespaces/ns/models/m/versions/7` -> `ns/m:7` (anything else as given)."""
    parts = name.split("/")
    if name.startswith(_VERSION_PREFIX) and len(parts) == 6 and parts[4] == "versions":
        return f"{parts[1]}/{parts[3]}:{parts[5]}"
    return name


def _diff(client: Client, args: argparse.Namespace) -> Output:
    args.dataset_digest = args.dataset_uri = None
    first = _edges(client, args, "up", args.first)
    second = _edges(client, args, "up", args.second)
    only_first, only_second = calls.diff(first, second)
    lines = [f"--- {args.first}", f"+++ {args.second}"]
    lines += [f"- {_edge_text(e)}" for e in only_first]
    lines += [f"+ {_edge_text(e)}" for e in only_second]
    if not (only_first or only_second):
        lines.append("(the same lineage)")
    message = struct_pb2.Struct()
    message.update({
        "only_in_first": [MessageToDict(e) for e in only_first],
        "only_in_second": [MessageToDict(e) for e in only_second],
    })  # fmt: skip
    return Summary(message, "\n".join(lines))


def _edge_text(edge: ln.LineageEdge) -> str:
    kind = ln.LineageEdgeKind.Name(edge.kind).removeprefix("LINEAGE_EDGE_KIND_").lower()
    return f"{kind} {label(edge.target)}  (from {short_version(edge.version.version)})"


def _node_of(text: str) -> ln.LineageNode:
    """argparse type of an edge target: `dataset:DIGEST[@URI]`, `dataset-uri:URI`,
    `version:REF`, `run:SYSTEM/ID`, `code:REPOSITORY@COMMIT`."""
    kind, sep, rest = text.partition(":")
    if not sep or not rest:
        raise argparse.ArgumentTypeError(f"expected KIND:VALUE, got {text!r}")
    if kind == "version":
        return calls.version(rest)
    if kind == "dataset":
        digest, _, uri = rest.partition("@")
        if not digest.count(":"):
            raise argparse.ArgumentTypeError("dataset:DIGEST[@URI], e.g. dataset:sha256:ab12…")
        return calls.dataset(digest, uri=uri)
    if kind == "dataset-uri":
        return ln.LineageNode(dataset=ln.LineageDataset(uri=rest))
    if kind == "run":
        system, _, external = rest.partition("/")
        return calls.run(system, external)
    if kind == "code":
        repository, _, commit = rest.rpartition("@")
        return calls.code(repository, commit)
    raise argparse.ArgumentTypeError(
        f"a node is dataset, dataset-uri, version, run or code: {kind!r}"
    )


def _add(client: Client, args: argparse.Namespace) -> Output:
    edges = [(kind, node) for kind, node in args.edge]
    added = client.add_lineage(args.version, edges)
    text = f"added {len(added)} of {len(edges)} edges (the rest were recorded already)"
    return Summary(ln.AddLineageResponse(added=added), text)


def _edge_arg(text: str) -> tuple[str, ln.LineageNode]:
    kind, sep, node = text.partition("=")
    if not sep or kind not in calls.KINDS:
        raise argparse.ArgumentTypeError(
            f"expected KIND=NODE with KIND one of {', '.join(calls.KINDS)}, got {text!r}"
        )
    return kind, _node_of(node)


def _import(client: Client, args: argparse.Namespace) -> Output:
    try:
        with sys.stdin if args.file == "-" else open(args.file, encoding="utf-8") as lines:
            recordings = read_events(lines)
    except EventError as exc:
        raise SystemExit(f"error: {args.file}: {exc}; nothing was recorded") from None
    except ImportError as exc:  # the `openlineage` extra is not installed
        raise SystemExit(f"error: {exc}") from None
    work = list(edges_of(recordings))
    added = 0
    with progress_bar(args.json, units=lambda n: f"{n:.0f}") as bar:
        for done, (version, edges) in enumerate(work, 1):
            added += len(client.add_lineage(version, edges))
            if bar is not None:
                bar("import", done, len(work))
    skipped = sum(1 for r in recordings if not r.versions)
    text = f"{len(recordings)} completed runs, {len(work)} versions: {added} edges added" + (
        f", {skipped} runs named no registry version" if skipped else ""
    )
    message = struct_pb2.Struct()
    message.update({"runs": len(recordings), "versions": len(work), "edges_added": added,
                    "runs_without_version": skipped})  # fmt: skip
    return Summary(message, text)


def _walk_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--depth", type=int, default=10, metavar="N", help="steps (1-50, default 10)"
    )
    parser.add_argument("--kind", action="append", choices=sorted(calls.KINDS),
                        help="only edges of this kind (repeatable)")  # fmt: skip
    add_limit(parser)


def add_lineage(commands: Commands) -> None:
    group = commands.group("lineage", "where versions came from and what a dataset fed")
    show = group.remote("show", _show, "print a version's lineage as a tree (`modelreg lineage"
                        " REF` for short): up by default")  # fmt: skip
    show.add_argument("ref", metavar="REF", nargs="?", help="ns/model@alias, ns/model:N, ...")
    which = show.add_mutually_exclusive_group()
    which.add_argument("--up", action="store_true", help="what it came from (the default)")
    which.add_argument("--down", action="store_true", help="what came from it")
    which.add_argument("--both", action="store_true", help="both trees")
    show.add_argument("--dataset-digest", metavar="DIGEST",
                      help="start at a dataset: what it fed (with --down)")  # fmt: skip
    show.add_argument("--dataset-uri", metavar="URI", help="start at every dataset at a URI")
    _walk_options(show)
    diff = group.remote("diff", _diff, "what is upstream of one version and not the other")
    diff.add_argument("first", metavar="REF")
    diff.add_argument("second", metavar="OTHER")
    _walk_options(diff)
    add = group.remote("add", _add, "record edges from a version (facts: added once)")
    add.add_argument("version", metavar="NS/MODEL:N")
    add.add_argument("edge", nargs="+", type=_edge_arg, metavar="KIND=NODE",
                     help="e.g. trained_on=dataset:sha256:…@s3://data/x, "
                     "fine_tuned_from=version:ns/base:3, produced_by=run:mlflow/RUN, "
                     "built_from=code:REPO@COMMIT")  # fmt: skip
    imp = group.remote("import", _import, "record OpenLineage run events (JSON lines) "
                       "against the versions their outputs name; twice adds nothing")  # fmt: skip
    imp.add_argument("file", metavar="FILE", help="JSON lines, or - for stdin")
