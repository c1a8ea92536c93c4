"""RegistryService: parse the request, call the domain, convert the answer."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import grpc

from modelreg.api import convert, wire
from modelreg.api.authorization import denied
from modelreg.api.errors import status_of
from modelreg.api.identity import actor_of, caller
from modelreg.api.services import add_service
from modelreg.domain.access import Permission
from modelreg.domain.consistency import Consistency
from modelreg.domain.errors import FailedPrecondition, RegistryError
from modelreg.domain.grants import GrantCache
from modelreg.domain.names import (
    ModelKey,
    Reference,
    VersionKey,
    parse_alias_name,
    parse_model_name,
    parse_namespace_name,
    parse_reference,
    parse_version_name,
)
from modelreg.domain.registry import Registry
from modelreg.domain.search import Search
from modelreg.domain.types import ModelQuery
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as pb

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]


SERVICE = rs.DESCRIPTOR.services_by_name["RegistryService"]
# The hot lookups answer with bytes assembled from cached, already serialized
# messages; their handlers are registered without a response serializer.
ENCODED = frozenset({"GetModel", "GetModelVersion", "ResolveReference", "BatchGetModelVersions"})


def add_registry_service(
    servicer: RegistryServicer, server: grpc.aio.Server, *, consistency: Consistency
) -> None:
    """Register every RegistryService RPC; the ENCODED ones answer in bytes."""
    add_service(server, servicer, SERVICE, rs, consistency=consistency, encoded=ENCODED)


class RegistryServicer:
    """The RegistryService RPCs; errors are mapped by api.interceptors."""

    def __init__(self, registry: Registry, *, grants: GrantCache | None = None) -> None:
        self._r = registry
        self._grants = grants  # None: authorization is off (every caller sees everything)

    async def CreateNamespace(
        self, request: rs.CreateNamespaceRequest, context: Context
    ) -> rs.CreateNamespaceResponse:
        ns = await self._r.namespaces.create(
            namespace_id=request.namespace_id,
            description=request.namespace.description,
            actor=actor_of(context),
            request_id=request.request_id,
        )
        return rs.CreateNamespaceResponse(namespace=convert.namespace_to_proto(ns))

    async def GetNamespace(
        self, request: rs.GetNamespaceRequest, context: Context
    ) -> rs.GetNamespaceResponse:
        ns = await self._r.namespaces.get(namespace_id=parse_namespace_name(request.name))
        return rs.GetNamespaceResponse(namespace=convert.namespace_to_proto(ns))

    async def ListNamespaces(
        self, request: rs.ListNamespacesRequest, context: Context
    ) -> rs.ListNamespacesResponse:
        only = self._grants.readable(caller()) if self._grants is not None else None
        page = await self._r.namespaces.list(
            size=request.page_size, token=request.page_token, only=only
        )
        return rs.ListNamespacesResponse(
            namespaces=[convert.namespace_to_proto(n) for n in page.items],
            next_page_token=page.next_token,
        )

    async def CreateModel(
        self, request: rs.CreateModelRequest, context: Context
    ) -> rs.CreateModelResponse:
        key = ModelKey(parse_namespace_name(request.parent, "parent"), request.model_id)
        model = await self._r.models.create(
            draft=convert.model_from_proto(key, request.model),
            actor=actor_of(context),
            request_id=request.request_id,
        )
        return rs.CreateModelResponse(model=convert.model_to_proto(model))

    async def GetModel(self, request: rs.GetModelRequest, context: Context) -> bytes:
        model = await self._r.lookups.model(
            key=parse_model_name(request.name), strong=_strong(request.consistency)
        )
        return wire.field(rs.GetModelResponse.MODEL_FIELD_NUMBER, model)

    async def ListModels(
        self, request: rs.ListModelsRequest, context: Context
    ) -> rs.ListModelsResponse:
        query = ModelQuery(
            namespace=parse_namespace_name(request.parent, "parent"),
            name_prefix=request.name_prefix,
            tags=tuple(request.tags),
            order_by=request.order_by,
            show_deleted=request.show_deleted,
            filter=request.filter,
        )
        page = await self._r.models.list(
            query=query, size=request.page_size, token=request.page_token
        )
        return rs.ListModelsResponse(
            models=[convert.model_to_proto(m) for m in page.items], next_page_token=page.next_token
        )

    async def UpdateModel(
        self, request: rs.UpdateModelRequest, context: Context
    ) -> rs.UpdateModelResponse:
        key = parse_model_name(request.model.name, "model.name")
        model = await self._r.models.update(
            changes=convert.model_from_proto(key, request.model),
            mask=request.update_mask.paths,
            etag=request.model.etag,
            actor=actor_of(context),
        )
        return rs.UpdateModelResponse(model=convert.model_to_proto(model))

    async def DeleteModel(
        self, request: rs.DeleteModelRequest, context: Context
    ) -> rs.DeleteModelResponse:
        model = await self._r.models.delete(
            key=parse_model_name(request.name), etag=request.etag, actor=actor_of(context)
        )
        return rs.DeleteModelResponse(model=convert.model_to_proto(model))

    async def UndeleteModel(
        self, request: rs.UndeleteModelRequest, context: Context
    ) -> rs.UndeleteModelResponse:
        model = await self._r.models.undelete(
            key=parse_model_name(request.name), etag=request.etag, actor=actor_of(context)
        )
        return rs.UndeleteModelResponse(model=convert.model_to_proto(model))

    async def CreateModelVersion(
        self, request: rs.CreateModelVersionRequest, context: Context
    ) -> rs.CreateModelVersionResponse:
        key = VersionKey(parse_model_name(request.parent, "parent"), 0)  # number comes later
        version = await self._r.versions.create(
            draft=convert.version_from_proto(key, request.version),
            actor=actor_of(context),
            request_id=request.request_id,
        )
        return rs.CreateModelVersionResponse(version=convert.version_to_proto(version))

    async def ImportModelVersion(
        self, request: rs.ImportModelVersionRequest, context: Context
    ) -> rs.ImportModelVersionResponse:
        given = request.version
        key = VersionKey(parse_model_name(request.parent, "parent"), max(given.number, 0))
        draft = dataclasses.replace(
            convert.version_from_proto(key, given),
            create_time=_time_of(given, "create_time"),
            update_time=_time_of(given, "update_time"),
        )
        version = await self._r.versions.import_version(draft=draft, actor=actor_of(context))
        return rs.ImportModelVersionResponse(version=convert.version_to_proto(version))

    async def GetModelVersion(self, request: rs.GetModelVersionRequest, context: Context) -> bytes:
        version = await self._r.lookups.get(
            key=parse_version_name(request.name), strong=_strong(request.consistency)
        )
        return wire.field(rs.GetModelVersionResponse.VERSION_FIELD_NUMBER, version)

    async def ListModelVersions(
        self, request: rs.ListModelVersionsRequest, context: Context
    ) -> rs.ListModelVersionsResponse:
        model = parse_model_name(request.parent, "parent")
        states = convert.states_from_proto(list(request.states), "states")
        if request.filter.strip():
            page = await self._search().versions(
                filter_text=request.filter, order_by=request.order_by, size=request.page_size,
                token=request.page_token, model=model, states=tuple(states),
            )  # fmt: skip
        else:
            page = await self._r.versions.list(
                model=model,
                order_by=request.order_by,
                states=states,
                size=request.page_size,
                token=request.page_token,
            )
        return rs.ListModelVersionsResponse(
            versions=[convert.version_to_proto(v) for v in page.items],
            next_page_token=page.next_token,
        )

    async def UpdateModelVersion(
        self, request: rs.UpdateModelVersionRequest, context: Context
    ) -> rs.UpdateModelVersionResponse:
        key = parse_version_name(request.version.name, "version.name")
        version = await self._r.versions.update(
            changes=convert.version_from_proto(key, request.version),
            mask=request.update_mask.paths,
            etag=request.version.etag,
            actor=actor_of(context),
        )
        return rs.UpdateModelVersionResponse(version=convert.version_to_proto(version))

    async def ArchiveModelVersion(
        self, request: rs.ArchiveModelVersionRequest, context: Context
    ) -> rs.ArchiveModelVersionResponse:
        version = await self._r.versions.archive(
            key=parse_version_name(request.name), etag=request.etag, actor=actor_of(context)
        )
        return rs.ArchiveModelVersionResponse(version=convert.version_to_proto(version))

    async def RestoreModelVersion(
        self, request: rs.RestoreModelVersionRequest, context: Context
    ) -> rs.RestoreModelVersionResponse:
        version = await self._r.versions.restore(
            key=parse_version_name(request.name), etag=request.etag, actor=actor_of(context)
        )
        return rs.RestoreModelVersionResponse(version=convert.version_to_proto(version))

    async def SetAlias(self, request: rs.SetAliasRequest, context: Context) -> rs.SetAliasResponse:
        alias, previous = await self._r.aliases.set(
            key=parse_alias_name(request.name),
            number=request.version_number,
            etag=request.etag,
            expected=request.expected_version_number
            if request.HasField("expected_version_number")
            else None,
            actor=actor_of(context),
        )
        return rs.SetAliasResponse(
            alias=convert.alias_to_proto(alias), previous_version_number=previous
        )

    async def DeleteAlias(
        self, request: rs.DeleteAliasRequest, context: Context
    ) -> rs.DeleteAliasResponse:
        alias = await self._r.aliases.delete(
            key=parse_alias_name(request.name), etag=request.etag, actor=actor_of(context)
        )
        return rs.DeleteAliasResponse(alias=convert.alias_to_proto(alias))

    async def ListAliases(
        self, request: rs.ListAliasesRequest, context: Context
    ) -> rs.ListAliasesResponse:
        aliases = await self._r.aliases.list(model=parse_model_name(request.parent, "parent"))
        return rs.ListAliasesResponse(aliases=[convert.alias_to_proto(a) for a in aliases])

    async def ListAliasHistory(
        self, request: rs.ListAliasHistoryRequest, context: Context
    ) -> rs.ListAliasHistoryResponse:
        page = await self._r.aliases.history(
            key=parse_alias_name(request.name), size=request.page_size, token=request.page_token
        )
        return rs.ListAliasHistoryResponse(
            events=[convert.alias_event_to_proto(e) for e in page.items],
            next_page_token=page.next_token,
        )

    async def RollbackAlias(
        self, request: rs.RollbackAliasRequest, context: Context
    ) -> rs.RollbackAliasResponse:
        alias, previous = await self._r.aliases.rollback(
            key=parse_alias_name(request.name),
            etag=request.etag,
            actor=actor_of(context),
            request_id=request.request_id,
        )
        return rs.RollbackAliasResponse(
            alias=convert.alias_to_proto(alias), previous_version_number=previous
        )

    async def ResolveReference(
        self, request: rs.ResolveReferenceRequest, context: Context
    ) -> bytes:
        version = await self._r.lookups.resolve(
            ref=parse_reference(request.reference), strong=_strong(request.consistency)
        )
        return wire.field(rs.ResolveReferenceResponse.VERSION_FIELD_NUMBER, version)

    async def SearchModelVersions(
        self, request: rs.SearchModelVersionsRequest, context: Context
    ) -> rs.SearchModelVersionsResponse:
        only = self._grants.readable(caller()) if self._grants is not None else None
        page = await self._search().versions(
            filter_text=request.filter, order_by=request.order_by, size=request.page_size,
            token=request.page_token, namespaces=only,
        )  # fmt: skip
        return rs.SearchModelVersionsResponse(
            versions=[convert.version_to_proto(v) for v in page.items],
            next_page_token=page.next_token,
        )

    def _search(self) -> Search:
        if self._r.search is None:
            raise FailedPrecondition("search needs the PostgreSQL store")
        return self._r.search

    async def BatchGetModelVersions(
        self, request: rs.BatchGetModelVersionsRequest, context: Context
    ) -> bytes:
        found = await self._r.lookups.batch(
            refs=list(request.references),
            strong=_strong(request.consistency),
            refused=self._refused(),
        )
        results = zip(request.references, found, strict=True)
        return b"".join(wire.field(1, _batch_result(ref, r)) for ref, r in results)

    def _refused(self) -> Callable[[Reference], RegistryError | None] | None:
        """Each item of a batch is decided on its own namespace (decided once per
        namespace in the batch)."""
        grants = self._grants
        if grants is None:
            return None
        principal = caller()
        decided: dict[str, RegistryError | None] = {}

        def refused(ref: Reference) -> RegistryError | None:
            namespace = ref.model.namespace
            if namespace not in decided:
                decision = grants.decide(principal, Permission.MODELS_READ, namespace)
                decided[namespace] = None if decision.allowed else denied(decision)
            return decided[namespace]

        return refused


def _strong(consistency: int) -> bool:
    return consistency == pb.CONSISTENCY_STRONG


def _batch_result(ref: str, result: bytes | RegistryError) -> bytes:
    """One encoded BatchGetModelVersionsResult: the reference, then the version or the error."""
    head = wire.field(rs.BatchGetModelVersionsResult.REFERENCE_FIELD_NUMBER, ref.encode())
    if isinstance(result, RegistryError):
        error = status_of(result).SerializeToString()
        return head + wire.field(rs.BatchGetModelVersionsResult.ERROR_FIELD_NUMBER, error)
    return head + wire.field(rs.BatchGetModelVersionsResult.VERSION_FIELD_NUMBER, result)


def _time_of(
    version: pb.ModelVersion, field: Literal["create_time", "update_time"]
) -> datetime | None:
    return getattr(version, field).ToDatetime(UTC) if version.HasField(field) else None
