"""OpenLineage run events as registry lineage (`modelreg lineage import`).

An event's outputs name the registry versions it produced: an output dataset whose
namespace is `modelreg` (or starts with `modelreg://`) and whose name is a version
reference (`ns/model:7`) or resource name. For each such version the run's input
datasets become `trained_on` edges (a dataset found by its URI, the OpenLineage
namespace and name joined by `/`, so the same dataset in two events is one node) and the
run a `produced_by` edge (system `openlineage`, its run id; the job in its parameters).

Events are parsed into openlineage-python's own types, so what it refuses (a run id that
is not a UUID, a time without a time of day, an unknown event type) is refused here, by
line number, before anything is recorded. Only COMPLETE events record lineage; the
inputs and outputs of a run's earlier events in the same file count toward its COMPLETE
event (integrations often send inputs on START). Recording is idempotent: AddLineage adds
an edge once, so importing the same events again adds nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from modelreg.v1 import lineage_service_pb2 as ln

Edge = tuple[str, ln.LineageNode]  # a kind (`trained_on`, ...) and its target, as add_lineage takes
REGISTRY_NAMESPACE = "modelreg"
SYSTEM = "openlineage"


class EventError(ValueError):
    """A line that is not an OpenLineage run event; `line` is 1-based."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line


@dataclass(slots=True)
class Recording:
    """What one COMPLETE event records: edges from each version it produced."""

    run_id: str
    job: str
    versions: list[str]
    edges: list[Edge]


@dataclass(slots=True)
class _Run:
    inputs: dict[str, Any] = field(default_factory=dict)  # uri -> InputDataset
    outputs: dict[str, Any] = field(default_factory=dict)


def read_events(lines: Iterable[str]) -> list[Recording]:
    """Parse JSON lines of OpenLineage events (blank lines skipped); raise EventError
    naming the first bad line. Returns what each COMPLETE event records, in file order."""
    try:
        from openlineage.client import event_v2
    except ImportError:  # pragma: no cover - the extra is part of [dev]
        raise ImportError(
            "reading OpenLineage needs openlineage-python: pip install 'modelreg[openlineage]'"
        ) from None
    runs: dict[str, _Run] = {}
    recordings: list[Recording] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        event = _parse(event_v2, number, line)
        run = runs.setdefault(event.run.runId, _Run())
        for dataset in event.inputs or ():
            run.inputs.setdefault(dataset_uri(dataset.namespace, dataset.name), dataset)
        for dataset in event.outputs or ():
            run.outputs.setdefault(dataset_uri(dataset.namespace, dataset.name), dataset)
        if event.eventType == event_v2.RunState.COMPLETE:
            recordings.append(_recording(event, run))
    return recordings


def dataset_uri(namespace: str, name: str) -> str:
    """How a dataset named by OpenLineage is found here: namespace and name joined."""
    return f"{namespace.rstrip('/')}/{name.lstrip('/')}"


def _parse(event_v2: Any, number: int, line: str) -> Any:
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EventError(number, f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(raw, dict) or "run" not in raw or "job" not in raw:
        raise EventError(number, "not an OpenLineage run event (it needs run and job)")
    try:
        return event_v2.RunEvent(
            eventType=event_v2.RunState(raw["eventType"]) if raw.get("eventType") else None,
            eventTime=raw["eventTime"],
            producer=raw.get("producer", ""),
            run=event_v2.Run(runId=raw["run"]["runId"], facets=raw["run"].get("facets") or {}),
            job=event_v2.Job(namespace=raw["job"]["namespace"], name=raw["job"]["name"]),
            inputs=[_dataset(event_v2.InputDataset, d) for d in raw.get("inputs") or ()],
            outputs=[_dataset(event_v2.OutputDataset, d) for d in raw.get("outputs") or ()],
        )
    except KeyError as exc:
        raise EventError(number, f"{exc.args[0]} is required") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise EventError(number, f"not a valid OpenLineage run event: {exc}") from None


def _dataset(kind: Any, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise TypeError("a dataset is an object with namespace and name")
    return kind(namespace=raw["namespace"], name=raw["name"], facets=raw.get("facets") or {})


def _recording(event: Any, run: _Run) -> Recording:
    versions = [d.name for d in run.outputs.values() if _is_registry(d.namespace)]
    edges: list[Edge] = [
        ("derived_from", ln.LineageNode(version=d.name)) if _is_registry(d.namespace)
        else ("trained_on", _dataset_node(uri, d))
        for uri, d in run.inputs.items()
    ]  # fmt: skip
    produced = ln.LineageRun(
        system=SYSTEM, external_id=event.run.runId,
        parameters={"job.namespace": event.job.namespace, "job.name": event.job.name},
    )  # fmt: skip
    edges.append(("produced_by", ln.LineageNode(run=produced)))
    return Recording(event.run.runId, f"{event.job.namespace}/{event.job.name}", versions, edges)


def _is_registry(namespace: str) -> bool:
    return namespace == REGISTRY_NAMESPACE or namespace.startswith(REGISTRY_NAMESPACE + "://")


def _dataset_node(uri: str, dataset: Any) -> ln.LineageNode:
    facet = (dataset.facets or {}).get("version")  # the DatasetVersionDatasetFacet
    version = str(facet.get("datasetVersion", "")) if isinstance(facet, dict) else ""
    return ln.LineageNode(dataset=ln.LineageDataset(uri=uri, name=dataset.name, version=version))


def edges_of(recordings: Iterable[Recording]) -> Iterator[tuple[str, list[Edge]]]:
    """(version, edges) for each version each recording names."""
    for recording in recordings:
        for version in recording.versions:
            yield version, recording.edges
