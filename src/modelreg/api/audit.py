"""AuditService: parse the request, call the domain, convert the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from modelreg.api.convert_audit import (
    denial_to_proto,
    denials_query_from_proto,
    event_to_proto,
    events_query_from_proto,
    verification_to_proto,
)
from modelreg.api.services import add_service
from modelreg.domain.audit import Audit, verify_start
from modelreg.domain.consistency import Consistency
from modelreg.v1 import audit_service_pb2 as au

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

SERVICE = au.DESCRIPTOR.services_by_name["AuditService"]


def add_audit_service(
    servicer: AuditServicer, server: grpc.aio.Server, *, consistency: Consistency
) -> None:
    """Register every AuditService RPC."""
    add_service(server, servicer, SERVICE, au, consistency=consistency)


class AuditServicer:
    """The AuditService RPCs; errors are mapped by api.interceptors."""

    def __init__(self, audit: Audit) -> None:
        self._audit = audit

    async def ListEvents(
        self, request: au.ListEventsRequest, context: Context
    ) -> au.ListEventsResponse:
        query = events_query_from_proto(request)
        page = await self._audit.list_events(
            query=query, size=request.page_size, token=request.page_token
        )
        return au.ListEventsResponse(
            events=[event_to_proto(e) for e in page.items], next_page_token=page.next_token
        )

    async def ListDenials(
        self, request: au.ListDenialsRequest, context: Context
    ) -> au.ListDenialsResponse:
        query = denials_query_from_proto(request)
        page = await self._audit.list_denials(
            query=query, size=request.page_size, token=request.page_token
        )
        return au.ListDenialsResponse(
            denials=[denial_to_proto(d) for d in page.items], next_page_token=page.next_token
        )

    async def VerifyAuditLog(
        self, request: au.VerifyAuditLogRequest, context: Context
    ) -> au.VerifyAuditLogResponse:
        after, previous, limit = verify_start(
            revision=request.after_revision,
            event_id=request.after_event_id,
            previous=request.expected_previous_hash,
            limit=request.max_events,
        )
        result = await self._audit.verify(after=after, previous=previous, limit=limit)
        return verification_to_proto(result)
