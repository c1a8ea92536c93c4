"""ApprovalService: parse the request, call the domain, convert the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from modelreg.api.convert import timestamp
from modelreg.api.identity import actor_of
from modelreg.api.services import add_service
from modelreg.domain.approvals import AliasPolicy, Approvals, ChangeRequest, parse_request_name
from modelreg.domain.consistency import Consistency
from modelreg.domain.errors import InvalidArgument
from modelreg.domain.names import check_id, parse_alias_name
from modelreg.v1 import approval_service_pb2 as ap

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

SERVICE = ap.DESCRIPTOR.services_by_name["ApprovalService"]
_POLICY = "aliasPolicy"
_STATES = {
    "PENDING": ap.CHANGE_REQUEST_STATE_PENDING,
    "APPLIED": ap.CHANGE_REQUEST_STATE_APPLIED,
    "REJECTED": ap.CHANGE_REQUEST_STATE_REJECTED,
    "EXPIRED": ap.CHANGE_REQUEST_STATE_EXPIRED,
    "ABORTED": ap.CHANGE_REQUEST_STATE_ABORTED,
}
_STATE_NAMES = {v: k for k, v in _STATES.items()}


def add_approval_service(
    servicer: ApprovalServicer, server: grpc.aio.Server, *, consistency: Consistency
) -> None:
    """Register every ApprovalService RPC."""
    add_service(server, servicer, SERVICE, ap, consistency=consistency)


def parse_policy_name(name: str, field: str = "name") -> tuple[str, str]:
    """(namespace, model or "") of `namespaces/{ns}[/models/{m}]/aliasPolicy`."""
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "namespaces" and parts[2] == _POLICY:
        return check_id(parts[1], field, "namespace"), ""
    if (
        len(parts) == 5
        and parts[0] == "namespaces"
        and parts[2] == "models"
        and (parts[4] == _POLICY)
    ):
        return check_id(parts[1], field, "namespace"), check_id(parts[3], field, "model")
    raise InvalidArgument.field(
        field, f"must be namespaces/{{ns}}[/models/{{m}}]/{_POLICY}, got {name[:100]!r}"
    )


def _parent(parent: str) -> tuple[str, str, str]:
    """(namespace, model, alias) of a ListChangeRequests parent ('' = any)."""
    parts = parent.split("/")
    if len(parts) == 2 and parts[0] == "namespaces":
        return check_id(parts[1], "parent", "namespace"), "", ""
    if len(parts) == 4 and parts[0] == "namespaces" and parts[2] == "models":
        return check_id(parts[1], "parent", "namespace"), check_id(parts[3], "parent"), ""
    key = parse_alias_name(parent, "parent")
    return key.model.namespace, key.model.model, key.alias


def policy_to_proto(policy: AliasPolicy) -> ap.AliasPolicy:
    head = f"namespaces/{policy.namespace}"
    name = f"{head}/models/{policy.model}/{_POLICY}" if policy.model else f"{head}/{_POLICY}"
    return ap.AliasPolicy(
        name=name, aliases=policy.aliases, approvals=policy.approvals, updater=policy.updater
    )


def request_to_proto(request: ChangeRequest) -> ap.ChangeRequest:
    return ap.ChangeRequest(
        name=request.name,
        version_number=request.number,
        digest=request.digest,
        expected_version_number=request.expected_number,
        reason=request.reason,
        requester=request.requester,
        approvals_needed=request.approvals_needed,
        state=_STATES[request.state],
        approvals=[
            ap.ChangeRequestApproval(approver=a.approver, time=timestamp(a.time), comment=a.comment)
            for a in request.approvals
        ],
        create_time=timestamp(request.create_time),
        expire_time=timestamp(request.expire_time),
        decide_time=timestamp(request.decide_time),
        decider=request.decider,
        decision=request.decision,
    )


class ApprovalServicer:
    """The ApprovalService RPCs; errors are mapped by api.interceptors."""

    def __init__(self, approvals: Approvals) -> None:
        self._a = approvals

    async def SetAliasPolicy(
        self, request: ap.SetAliasPolicyRequest, context: Context
    ) -> ap.SetAliasPolicyResponse:
        namespace, model = parse_policy_name(request.policy.name, "policy.name")
        policy = await self._a.set_policy(
            namespace=namespace,
            model=model,
            aliases=list(request.policy.aliases),
            approvals=request.policy.approvals,
            actor=actor_of(context),
        )
        return ap.SetAliasPolicyResponse(policy=policy_to_proto(policy))

    async def GetAliasPolicy(
        self, request: ap.GetAliasPolicyRequest, context: Context
    ) -> ap.GetAliasPolicyResponse:
        namespace, model = parse_policy_name(request.name)
        policy = await self._a.get_policy(namespace=namespace, model=model)
        return ap.GetAliasPolicyResponse(policy=policy_to_proto(policy))

    async def CreateChangeRequest(
        self, request: ap.CreateChangeRequestRequest, context: Context
    ) -> ap.CreateChangeRequestResponse:
        if request.ttl_seconds < 0:
            raise InvalidArgument.field("ttl_seconds", "must not be negative")
        created = await self._a.create(
            key=parse_alias_name(request.parent, "parent"),
            number=request.version_number,
            reason=request.reason,
            actor=actor_of(context),
            ttl_seconds=min(request.ttl_seconds, 10 * 365 * 24 * 3600),
        )
        return ap.CreateChangeRequestResponse(change_request=request_to_proto(created))

    async def GetChangeRequest(
        self, request: ap.GetChangeRequestRequest, context: Context
    ) -> ap.GetChangeRequestResponse:
        key, request_id = parse_request_name(request.name)
        found = await self._a.get(key=key, request_id=request_id)
        return ap.GetChangeRequestResponse(change_request=request_to_proto(found))

    async def ListChangeRequests(
        self, request: ap.ListChangeRequestsRequest, context: Context
    ) -> ap.ListChangeRequestsResponse:
        namespace, model, alias = _parent(request.parent)
        if request.state and request.state not in _STATE_NAMES:
            raise InvalidArgument.field("state", f"unknown state {request.state}")
        if request.page_size < 0:
            raise InvalidArgument.field("page_size", "must not be negative")
        items, token = await self._a.list(
            namespace=namespace,
            model=model,
            alias=alias,
            state=_STATE_NAMES.get(request.state, ""),
            size=request.page_size,
            token=request.page_token,
        )
        return ap.ListChangeRequestsResponse(
            change_requests=[request_to_proto(r) for r in items], next_page_token=token
        )

    async def ApproveChangeRequest(
        self, request: ap.ApproveChangeRequestRequest, context: Context
    ) -> ap.ApproveChangeRequestResponse:
        key, request_id = parse_request_name(request.name)
        approved = await self._a.approve(
            key=key, request_id=request_id, actor=actor_of(context), comment=request.comment
        )
        return ap.ApproveChangeRequestResponse(change_request=request_to_proto(approved))

    async def RejectChangeRequest(
        self, request: ap.RejectChangeRequestRequest, context: Context
    ) -> ap.RejectChangeRequestResponse:
        key, request_id = parse_request_name(request.name)
        rejected = await self._a.reject(
            key=key, request_id=request_id, actor=actor_of(context), reason=request.reason
        )
        return ap.RejectChangeRequestResponse(change_request=request_to_proto(rejected))
