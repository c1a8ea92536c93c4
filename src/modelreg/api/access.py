"""AccessService: role bindings and ExplainAccess (domain/accesscontrol.py does the work)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from modelreg.api.authorization import may
from modelreg.api.convert import timestamp
from modelreg.api.identity import actor_of, caller
from modelreg.api.permissions import RULES, Where
from modelreg.api.services import add_service
from modelreg.domain.access import (
    GLOBAL,
    Binding,
    BindingKey,
    Decision,
    Permission,
    SubjectKind,
    binding_key,
)
from modelreg.domain.accesscontrol import AccessControl
from modelreg.domain.consistency import Consistency
from modelreg.domain.errors import InvalidArgument
from modelreg.domain.grants import GrantCache
from modelreg.domain.names import REGISTRY, check_id, check_principal, parse_reference
from modelreg.domain.principals import Principal, Proof
from modelreg.v1 import access_service_pb2 as ac

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

SERVICE = ac.DESCRIPTOR.services_by_name["AccessService"]
_ROLES = {1: "viewer", 2: "editor", 3: "approver", 4: "admin"}
_ROLE_NUMBERS = {name: number for number, name in _ROLES.items()}
MAX_GROUPS = 100


def add_access_service(
    servicer: AccessServicer, server: grpc.aio.Server, *, consistency: Consistency
) -> None:
    """Register every AccessService RPC."""
    add_service(server, servicer, SERVICE, ac, consistency=consistency)


class AccessServicer:
    """The AccessService RPCs; the gate has checked access.admin / access.read already."""

    def __init__(self, access: AccessControl, grants: GrantCache) -> None:
        self._a = access
        self._grants = grants

    async def CreateRoleBinding(
        self, request: ac.CreateRoleBindingRequest, context: Context
    ) -> ac.CreateRoleBindingResponse:
        key = key_from_proto(request.binding)
        made = await self._a.grant(key=key, actor=actor_of(context))
        return ac.CreateRoleBindingResponse(binding=binding_to_proto(made))

    async def DeleteRoleBinding(
        self, request: ac.DeleteRoleBindingRequest, context: Context
    ) -> ac.DeleteRoleBindingResponse:
        key = key_from_proto(request.binding)
        removed = await self._a.revoke(key=key, actor=actor_of(context))
        return ac.DeleteRoleBindingResponse(binding=binding_to_proto(removed))

    async def ListRoleBindings(
        self, request: ac.ListRoleBindingsRequest, context: Context
    ) -> ac.ListRoleBindingsResponse:
        scope = _listing_scope(request)
        subject = None
        if request.subject:
            kind = _kind(request.subject_kind, "subject_kind")
            subject = (kind, check_principal(request.subject, "subject"))
        page = await self._a.list(
            scope=scope, subject=subject, size=request.page_size, token=request.page_token
        )
        return ac.ListRoleBindingsResponse(
            bindings=[binding_to_proto(b) for b in page.items], next_page_token=page.next_token
        )

    async def ExplainAccess(
        self, request: ac.ExplainAccessRequest, context: Context
    ) -> ac.ExplainAccessResponse:
        asking = caller()
        namespace = resource_namespace(request.resource)
        about = _principal(request, asking)
        if about.name != asking.name:  # about someone else: admins (access.read) only
            may(self._grants, asking, Permission.ACCESS_READ, namespace)
        rule = RULES.get(request.method)
        if rule is None:
            raise InvalidArgument.field("method", f"unknown method {request.method[:128]!r}")
        if rule.permission is None:
            return ac.ExplainAccessResponse(
                allowed=True, principal=about.name, reason=f"{request.method} is open to anyone"
            )
        if rule.scope is Where.GLOBAL:
            namespace = GLOBAL
        if rule.scope is Where.ANYWHERE:
            decision = self._grants.bindings.decide_anywhere(about, rule.permission)
        else:
            decision = self._grants.decide(about, rule.permission, namespace)
        return decision_to_proto(decision)


def _principal(request: ac.ExplainAccessRequest, asking: Principal) -> Principal:
    if not request.principal:
        return asking
    if len(request.groups) > MAX_GROUPS:
        raise InvalidArgument.field("groups", f"at most {MAX_GROUPS} groups")
    groups = frozenset(check_principal(g, f"groups[{i}]") for i, g in enumerate(request.groups))
    return Principal(check_principal(request.principal), Proof.NONE, groups)


def resource_namespace(resource: str) -> str:
    """The namespace a resource name or short reference is in (GLOBAL for none)."""
    if not resource or resource == REGISTRY:
        return GLOBAL
    if resource.startswith("namespaces/"):
        return check_id(resource.split("/", 2)[1], "resource", "namespace id")
    return parse_reference(resource, "resource").model.namespace


def _listing_scope(request: ac.ListRoleBindingsRequest) -> str | None:
    if request.global_only:
        if request.namespace:
            raise InvalidArgument.field("global_only", "cannot be set with a namespace")
        return GLOBAL
    return check_id(request.namespace, "namespace", "namespace id") if request.namespace else None


def _kind(value: int, field: str) -> SubjectKind:
    if value in (ac.SUBJECT_KIND_UNSPECIFIED, ac.SUBJECT_KIND_PRINCIPAL):
        return SubjectKind.PRINCIPAL
    if value == ac.SUBJECT_KIND_GROUP:
        return SubjectKind.GROUP
    raise InvalidArgument.field(field, f"unknown subject kind {value}")


def key_from_proto(msg: ac.RoleBinding) -> BindingKey:
    """A checked binding key from the request (InvalidArgument on `binding.*`)."""
    role = _ROLES.get(msg.role)
    if role is None:
        raise InvalidArgument.field("binding.role", "a role is required (viewer..admin)")
    kind = _kind(msg.subject_kind, "binding.subject_kind")
    try:
        return binding_key(
            role=role,
            subject=msg.subject,
            group=kind is SubjectKind.GROUP,
            namespace=msg.namespace,
        )
    except InvalidArgument as exc:
        raise InvalidArgument([(f"binding.{f}", what) for f, what in exc.violations]) from None


def key_to_proto(key: BindingKey) -> ac.RoleBinding:
    kind = ac.SUBJECT_KIND_GROUP if key.kind is SubjectKind.GROUP else ac.SUBJECT_KIND_PRINCIPAL
    return ac.RoleBinding(
        role=_ROLE_NUMBERS[key.role.value],  # type: ignore[arg-type]
        subject_kind=kind,
        subject=key.subject,
        namespace=key.scope,
    )


def binding_to_proto(binding: Binding) -> ac.RoleBinding:
    msg = key_to_proto(binding.key)
    msg.created_by = binding.created_by
    stamp = timestamp(binding.create_time)
    if stamp is not None:
        msg.create_time.CopyFrom(stamp)
    return msg


def decision_to_proto(decision: Decision) -> ac.ExplainAccessResponse:
    response = ac.ExplainAccessResponse(
        allowed=decision.allowed,
        permission=decision.permission.value,
        namespace=decision.namespace,
        reason=decision.reason,
        principal=decision.principal,
    )
    if decision.binding is not None:
        response.binding.CopyFrom(key_to_proto(decision.binding))
    return response
