"""Builders for versions, aliases and lookups (see calls.py for what a builder is)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from google.protobuf.message import Message

from modelreg.client.calls import (
    Call,
    Pages,
    StateArg,
    consistency_of,
    new_request_id,
    reply_itself,
    state_value,
    update_mask,
)
from modelreg.client.names import alias_name, model_name, version_name
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as res


def create_version(
    model: str,
    *,
    ready: bool = False,
    description: str = "",
    tags: Iterable[str] = (),
    labels: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, str] | None = None,
    source: res.VersionSource | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
) -> Call[res.ModelVersion]:
    """Create the next version of a model, PENDING or (`ready`) READY; safe to retry."""
    body = res.ModelVersion(
        state=res.MODEL_VERSION_STATE_READY if ready else res.MODEL_VERSION_STATE_PENDING,
        description=description,
        tags=tags,
        labels=labels,
        metrics=metrics,
        params=params,
        source=source,
    )
    request = rs.CreateModelVersionRequest(
        parent=model_name(model), version=body, request_id=new_request_id(request_id)
    )
    return Call("CreateModelVersion", request, lambda r: r.version, True, timeout)


def import_version(
    model: str, version: res.ModelVersion, *, timeout: float | None = None
) -> Call[res.ModelVersion]:
    """Import a version made in another registry under its own number and times
    (`version.number`, the model's next; `version.create_time`, required). Needs
    models.import. A retry after success is ALREADY_EXISTS (AlreadyExistsError)."""
    request = rs.ImportModelVersionRequest(parent=model_name(model), version=version)
    return Call("ImportModelVersion", request, lambda r: r.version, False, timeout)


def get_version(
    version: str,
    number: int | None = None,
    *,
    strong: bool = False,
    timeout: float | None = None,
) -> Call[res.ModelVersion]:
    """Return one version: `get_version("ns/model:3")` or `get_version("ns/model", 3)`."""
    name = version_name(version, number)
    request = rs.GetModelVersionRequest(name=name, consistency=consistency_of(strong))
    return Call("GetModelVersion", request, lambda r: r.version, True, timeout)


def list_versions(
    model: str,
    *,
    states: Iterable[StateArg] = (),
    order_by: str = "",
    filter: str = "",
    page_size: int | None = None,
    timeout: float | None = None,
) -> Pages[res.ModelVersion]:
    """Iterate over a model's versions, newest first (`order_by="number"`: oldest first),
    those matching `filter` if given (AIP-160, as `search_versions` takes it)."""
    parent, state_list = model_name(model), [state_value(s) for s in states]

    def page(token: str) -> Message:
        return rs.ListModelVersionsRequest(
            parent=parent,
            page_size=page_size or 0,
            page_token=token,
            order_by=order_by,
            states=state_list,
            filter=filter,
        )

    return Pages("ListModelVersions", page, lambda r: r.versions, timeout)


def search_versions(
    filter: str = "",
    *,
    order_by: str = "",
    page_size: int | None = None,
    timeout: float | None = None,
) -> Pages[res.ModelVersion]:
    """Iterate over the versions of every namespace you may read that match `filter`,
    e.g. `'labels.team = "vision" AND metrics.accuracy >= 0.9'`; newest first, or by
    `order_by` (`create_time`, `update_time`, `number`, `metrics.<key>`, + asc/desc)."""

    def page(token: str) -> Message:
        return rs.SearchModelVersionsRequest(
            filter=filter, order_by=order_by, page_size=page_size or 0, page_token=token
        )

    return Pages("SearchModelVersions", page, lambda r: r.versions, timeout)


def update_version(
    version: str,
    number: int | None = None,
    *,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    labels: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, str] | None = None,
    source: res.VersionSource | None = None,
    etag: str | None = None,
    timeout: float | None = None,
) -> Call[res.ModelVersion]:
    """Change the metadata given (others are left alone); `source` is replaced whole."""
    mask = update_mask(
        description=description,
        tags=tags,
        labels=labels,
        metrics=metrics,
        params=params,
        source=source,
    )
    body = res.ModelVersion(
        name=version_name(version, number),
        description=description or "",
        tags=tags,
        labels=labels,
        metrics=metrics,
        params=params,
        source=source,
        etag=etag or "",
    )
    request = rs.UpdateModelVersionRequest(version=body, update_mask=mask)
    return Call("UpdateModelVersion", request, lambda r: r.version, False, timeout)


def archive_version(
    version: str,
    number: int | None = None,
    *,
    etag: str | None = None,
    timeout: float | None = None,
) -> Call[res.ModelVersion]:
    """Archive a READY version, hiding it from `latest`."""
    request = rs.ArchiveModelVersionRequest(name=version_name(version, number), etag=etag or "")
    return Call("ArchiveModelVersion", request, lambda r: r.version, False, timeout)


def restore_version(
    version: str,
    number: int | None = None,
    *,
    etag: str | None = None,
    timeout: float | None = None,
) -> Call[res.ModelVersion]:
    """Restore an ARCHIVED version to READY."""
    request = rs.RestoreModelVersionRequest(name=version_name(version, number), etag=etag or "")
    return Call("RestoreModelVersion", request, lambda r: r.version, False, timeout)


def set_alias(
    model: str,
    alias: str,
    version_number: int,
    *,
    etag: str | None = None,
    expected_version: int | None = None,
    timeout: float | None = None,
) -> Call[rs.SetAliasResponse]:
    """Point an alias at a version; `expected_version` (0: must not exist) guards the move."""
    request = rs.SetAliasRequest(
        name=alias_name(model, alias),
        version_number=version_number,
        etag=etag or "",
        expected_version_number=expected_version,
    )
    # Retried on UNAVAILABLE: a repeated move lands on the same version. A guarded
    # move whose first attempt did land may then report ABORTED.
    return Call("SetAlias", request, reply_itself, True, timeout)


def delete_alias(
    model: str, alias: str, *, etag: str | None = None, timeout: float | None = None
) -> Call[res.Alias]:
    """Delete an alias; returns it as it was."""
    request = rs.DeleteAliasRequest(name=alias_name(model, alias), etag=etag or "")
    return Call("DeleteAlias", request, lambda r: r.alias, False, timeout)


def list_aliases(model: str, *, timeout: float | None = None) -> Call[list[res.Alias]]:
    """Every alias of a model, by id."""
    request = rs.ListAliasesRequest(parent=model_name(model))
    return Call("ListAliases", request, lambda r: list(r.aliases), True, timeout)


def alias_history(
    model: str, alias: str, *, page_size: int | None = None, timeout: float | None = None
) -> Pages[res.AliasEvent]:
    """Iterate over the moves of an alias, newest first."""
    name = alias_name(model, alias)

    def page(token: str) -> Message:
        return rs.ListAliasHistoryRequest(name=name, page_size=page_size or 0, page_token=token)

    return Pages("ListAliasHistory", page, lambda r: r.events, timeout)


def rollback_alias(
    model: str,
    alias: str,
    *,
    etag: str | None = None,
    request_id: str | None = None,
    timeout: float | None = None,
) -> Call[rs.RollbackAliasResponse]:
    """Move an alias back to where it pointed before its last move; safe to retry."""
    request = rs.RollbackAliasRequest(
        name=alias_name(model, alias), etag=etag or "", request_id=new_request_id(request_id)
    )
    return Call("RollbackAlias", request, reply_itself, True, timeout)


def resolve(
    reference: str, *, strong: bool = False, timeout: float | None = None
) -> Call[res.ModelVersion]:
    """The version `ns/model@alias`, `ns/model:7` or `ns/model` (latest READY) points to."""
    request = rs.ResolveReferenceRequest(reference=reference, consistency=consistency_of(strong))
    return Call("ResolveReference", request, lambda r: r.version, True, timeout)


def batch_get(
    references: Iterable[str], *, strong: bool = False, timeout: float | None = None
) -> Call[list[rs.BatchGetModelVersionsResult]]:
    """Resolve up to 1,000 references at once; each result holds a version or an error."""
    request = rs.BatchGetModelVersionsRequest(
        references=list(references), consistency=consistency_of(strong)
    )
    return Call("BatchGetModelVersions", request, lambda r: list(r.results), True, timeout)
