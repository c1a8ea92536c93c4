"""The one table of what each RPC needs: method full name -> Rule (the permission, and
where the call acts: which namespace, read from the request with the same parsers the
servicer uses, so the gate and the handler can never read two different namespaces).

Scopes that are not one namespace read from the request:

- GLOBAL: decided on global bindings only (the call acts on no namespace).
- ANYWHERE: allowed if any binding of the caller holds the permission, in any scope
  (FindMissingBlobs: an editor of any namespace may ask which bytes to send).
- PER_ITEM: the gate only authenticates; the servicer decides each item or filters
  what it answers (BatchGetModelVersions, ListNamespaces, Watch, ExplainAccess).
- OPEN: no authentication at all (health, reflection).

A test (tests/unit/test_permissions.py) walks every registered service's descriptor and
fails when an RPC has no row. A row is one line; rows for services added later go in the
same table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from modelreg.api.approvals import parse_policy_name
from modelreg.domain.access import GLOBAL, Permission
from modelreg.domain.approvals import parse_request_name
from modelreg.domain.errors import InvalidArgument
from modelreg.domain.names import (
    check_id,
    parse_alias_name,
    parse_model_name,
    parse_namespace_name,
    parse_reference,
    parse_version_name,
)

P = Permission


class Where(Enum):
    """Scopes that are not read from a request field."""

    GLOBAL = "global"
    ANYWHERE = "anywhere"
    PER_ITEM = "per item"
    OPEN = "open"


Scope = Callable[[Any], str] | Where


@dataclass(frozen=True, slots=True)
class Rule:
    """What one RPC needs: `permission` in the namespace `scope` finds (None: OPEN)."""

    permission: Permission | None
    scope: Scope
    mutates: bool = False  # a refusal of it is recorded (DenialLog)

    def namespace(self, request: Any) -> str:
        """The namespace the call acts on (GLOBAL for the Where scopes)."""
        scope = self.scope
        return GLOBAL if isinstance(scope, Where) else scope(request)


def read(permission: Permission, scope: Scope) -> Rule:
    return Rule(permission, scope)


def write(permission: Permission, scope: Scope) -> Rule:
    return Rule(permission, scope, mutates=True)


OPEN = Rule(None, Where.OPEN)


# Where a request names its namespace (each raises InvalidArgument like the servicer would).
def _ns_name(r: Any) -> str:
    return parse_namespace_name(r.name)


def _ns_parent(r: Any) -> str:
    return parse_namespace_name(r.parent, "parent")


def _ns_id(r: Any) -> str:
    return check_id(r.namespace_id, "namespace_id", "namespace id")


def _model_name(r: Any) -> str:
    return _model_namespace(r.name)


@functools.lru_cache(maxsize=4096)
def _model_namespace(name: str) -> str:
    return parse_model_name(name).namespace


def _model_parent(r: Any) -> str:
    return parse_model_name(r.parent, "parent").namespace


def _model_field(r: Any) -> str:
    return parse_model_name(r.model.name, "model.name").namespace


def _version_name(r: Any) -> str:
    return _version_namespace(r.name)


@functools.lru_cache(maxsize=4096)
def _version_namespace(name: str) -> str:
    """GetModelVersion's hot path: the same names are looked up again and again (only a
    name that parses is kept; a bad one raises every time, as the servicer's parse does)."""
    return parse_version_name(name).model.namespace


def _version_field(r: Any) -> str:
    return parse_version_name(r.version.name, "version.name").model.namespace


def _version_ref(r: Any) -> str:
    return parse_version_name(r.version, "version").model.namespace


def _lineage_version(r: Any) -> str:
    return parse_reference(r.version, "version").model.namespace


def _alias_name(r: Any) -> str:
    return parse_alias_name(r.name).model.namespace


def _reference(r: Any) -> str:
    return parse_reference(r.reference).model.namespace


def _upload_header(r: Any) -> str:
    """An upload stream's first message (the gate peeks at it) names the version."""
    if not r.HasField("header"):
        raise InvalidArgument.field("header", "the first message of an upload must carry it")
    return parse_version_name(r.header.version, "header.version").model.namespace


def _binding_scope(r: Any) -> str:
    namespace: str = r.binding.namespace
    return check_id(namespace, "binding.namespace", "namespace id") if namespace else GLOBAL


def _listing_scope(r: Any) -> str:
    namespace: str = r.namespace
    return check_id(namespace, "namespace", "namespace id") if namespace else GLOBAL


def _policy_name(r: Any) -> str:
    return parse_policy_name(r.name)[0]


def _policy_field(r: Any) -> str:
    return parse_policy_name(r.policy.name, "policy.name")[0]


def _alias_parent(r: Any) -> str:
    return parse_alias_name(r.parent, "parent").model.namespace


def _change_request(r: Any) -> str:
    return parse_request_name(r.name)[0].model.namespace


def _leading_namespace(r: Any) -> str:
    """ListChangeRequests' parent: a namespace, a model or an alias."""
    head, _, rest = r.parent.partition("/")
    namespace = rest.partition("/")[0]
    if head != "namespaces" or not namespace:
        raise InvalidArgument.field("parent", "must name a namespace, a model or an alias")
    return check_id(namespace, "parent", "namespace id")


def _audit_scope(r: Any) -> str:
    """ListEvents: the namespace it asks for (or its model's); without either, every
    namespace's events and those of none: a global question."""
    if r.namespace:
        return parse_namespace_name(r.namespace, "namespace")
    if r.model:
        return parse_model_name(r.model, "model").namespace
    return GLOBAL


R, A = "/modelreg.v1.RegistryService/", "/modelreg.v1.ArtifactService/"
_ADM, _WAT = "/modelreg.v1.AdminService/", "/modelreg.v1.WatchService/"
_WEB, _ACC = "/modelreg.v1.WebhookService/", "/modelreg.v1.AccessService/"
_APP, _AUD = "/modelreg.v1.ApprovalService/", "/modelreg.v1.AuditService/"
_LIN = "/modelreg.v1.LineageService/"
_IDS = "/modelreg.v1.IdentityService/"

RULES: Mapping[str, Rule] = {
    R + "CreateNamespace": write(P.NAMESPACES_CREATE, _ns_id),
    R + "GetNamespace": read(P.MODELS_READ, _ns_name),
    R + "ListNamespaces": read(P.MODELS_READ, Where.PER_ITEM),  # filtered in the query
    R + "CreateModel": write(P.MODELS_WRITE, _ns_parent),
    R + "GetModel": read(P.MODELS_READ, _model_name),
    R + "ListModels": read(P.MODELS_READ, _ns_parent),
    R + "UpdateModel": write(P.MODELS_WRITE, _model_field),
    R + "DeleteModel": write(P.MODELS_DELETE, _model_name),
    R + "UndeleteModel": write(P.MODELS_DELETE, _model_name),
    R + "CreateModelVersion": write(P.MODELS_WRITE, _model_parent),
    R + "ImportModelVersion": write(P.MODELS_IMPORT, _model_parent),
    R + "GetModelVersion": read(P.MODELS_READ, _version_name),
    R + "ListModelVersions": read(P.MODELS_READ, _model_parent),
    R + "UpdateModelVersion": write(P.MODELS_WRITE, _version_field),
    R + "ArchiveModelVersion": write(P.MODELS_WRITE, _version_name),
    R + "RestoreModelVersion": write(P.MODELS_WRITE, _version_name),
    R + "SetAlias": write(P.ALIASES_MOVE, _alias_name),
    R + "DeleteAlias": write(P.ALIASES_MOVE, _alias_name),
    R + "ListAliases": read(P.MODELS_READ, _model_parent),
    R + "ListAliasHistory": read(P.MODELS_READ, _alias_name),
    R + "RollbackAlias": write(P.ALIASES_MOVE, _alias_name),
    R + "ResolveReference": read(P.MODELS_READ, _reference),
    R + "BatchGetModelVersions": read(P.MODELS_READ, Where.PER_ITEM),  # each item decided
    R + "SearchModelVersions": read(P.MODELS_READ, Where.PER_ITEM),  # readable ones, in SQL
    A + "UploadFile": write(P.MODELS_WRITE, _upload_header),
    A + "GetUploadStatus": read(P.MODELS_WRITE, _version_ref),
    A + "FindMissingBlobs": read(P.MODELS_WRITE, Where.ANYWHERE),
    A + "FinalizeModelVersion": write(P.MODELS_WRITE, _version_name),
    A + "FailModelVersion": write(P.MODELS_WRITE, _version_name),
    A + "DownloadFile": read(P.MODELS_READ, _reference),
    A + "ListManifest": read(P.MODELS_READ, _reference),
    _ADM + "GetServerStats": read(P.SERVER_ADMIN, Where.GLOBAL),
    _WAT + "Watch": read(P.MODELS_READ, Where.PER_ITEM),  # each event decided
    _LIN + "AddLineage": write(P.MODELS_WRITE, _lineage_version),
    # read on the start version's namespace is decided by the servicer; a walk enters
    # only readable namespaces, and a dataset start is open to any reader
    _LIN + "GetLineage": read(P.MODELS_READ, Where.PER_ITEM),
    _APP + "SetAliasPolicy": write(P.POLICIES_MANAGE, _policy_field),
    _APP + "GetAliasPolicy": read(P.MODELS_READ, _policy_name),
    _APP + "CreateChangeRequest": write(P.MODELS_WRITE, _alias_parent),
    _APP + "GetChangeRequest": read(P.MODELS_READ, _change_request),
    _APP + "ListChangeRequests": read(P.MODELS_READ, _leading_namespace),
    # the requester may not decide its own request: the domain refuses that
    _APP + "ApproveChangeRequest": write(P.ALIASES_APPROVE, _change_request),
    _APP + "RejectChangeRequest": write(P.ALIASES_APPROVE, _change_request),
    _IDS + "WhoAmI": read(P.MODELS_READ, Where.PER_ITEM),  # any authenticated caller, of itself
    _IDS + "CreateApiKey": write(P.KEYS_MANAGE, Where.GLOBAL),
    _IDS + "ListApiKeys": read(P.KEYS_MANAGE, Where.GLOBAL),
    _IDS + "RevokeApiKey": write(P.KEYS_MANAGE, Where.GLOBAL),
    _AUD + "ListEvents": read(P.AUDIT_READ, _audit_scope),
    _AUD + "ListDenials": read(P.AUDIT_READ, Where.GLOBAL),
    _AUD + "VerifyAuditLog": read(P.AUDIT_READ, Where.GLOBAL),
    _WEB + "CreateWebhook": write(P.WEBHOOKS_MANAGE, Where.GLOBAL),
    _WEB + "GetWebhook": read(P.WEBHOOKS_MANAGE, Where.GLOBAL),
    _WEB + "ListWebhooks": read(P.WEBHOOKS_MANAGE, Where.GLOBAL),
    _WEB + "DeleteWebhook": write(P.WEBHOOKS_MANAGE, Where.GLOBAL),
    _WEB + "ListWebhookDeliveries": read(P.WEBHOOKS_MANAGE, Where.GLOBAL),
    _WEB + "RedeliverWebhook": write(P.WEBHOOKS_MANAGE, Where.GLOBAL),
    _ACC + "CreateRoleBinding": write(P.ACCESS_ADMIN, _binding_scope),
    _ACC + "DeleteRoleBinding": write(P.ACCESS_ADMIN, _binding_scope),
    _ACC + "ListRoleBindings": read(P.ACCESS_READ, _listing_scope),
    _ACC + "ExplainAccess": read(P.ACCESS_READ, Where.PER_ITEM),  # self: anyone; others: admins
    "/grpc.health.v1.Health/Check": OPEN,
    "/grpc.health.v1.Health/Watch": OPEN,
    "/grpc.health.v1.Health/List": OPEN,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": OPEN,
}
