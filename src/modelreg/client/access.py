"""Request builders for AccessService (each builder's docstring is its method's): role
bindings and ExplainAccess. Roles are `viewer`, `editor`, `approver`, `admin`."""

from __future__ import annotations

from google.protobuf.message import Message

from modelreg.client.calls import ACCESS, Call, Pages
from modelreg.v1 import access_service_pb2 as ac

ROLES = {
    "viewer": ac.ROLE_VIEWER,
    "editor": ac.ROLE_EDITOR,
    "approver": ac.ROLE_APPROVER,
    "admin": ac.ROLE_ADMIN,
}
ROLE_NAMES = {number: name for name, number in ROLES.items()}


def _binding(role: str, subject: str, *, group: bool, namespace: str) -> ac.RoleBinding:
    number = ROLES.get(role)
    if number is None:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    kind = ac.SUBJECT_KIND_GROUP if group else ac.SUBJECT_KIND_PRINCIPAL
    return ac.RoleBinding(role=number, subject=subject, subject_kind=kind, namespace=namespace)


def grant(
    role: str,
    subject: str,
    *,
    group: bool = False,
    namespace: str = "",
    timeout: float | None = None,
) -> Call[ac.CreateRoleBindingResponse]:
    """Bind `role` to a principal (or, with `group`, a group), in `namespace` or globally.
    Not retried once sent: a retry of a grant that landed answers ALREADY_EXISTS."""
    request = ac.CreateRoleBindingRequest(
        binding=_binding(role, subject, group=group, namespace=namespace)
    )
    return Call("CreateRoleBinding", request, lambda r: r, False, timeout, ACCESS)


def revoke(
    role: str,
    subject: str,
    *,
    group: bool = False,
    namespace: str = "",
    timeout: float | None = None,
) -> Call[ac.DeleteRoleBindingResponse]:
    """Remove a role binding; the reply's revision is the point from which every server
    decides without it (pass it as a consistency token)."""
    request = ac.DeleteRoleBindingRequest(
        binding=_binding(role, subject, group=group, namespace=namespace)
    )
    return Call("DeleteRoleBinding", request, lambda r: r, False, timeout, ACCESS)


def list_bindings(
    *,
    namespace: str = "",
    subject: str = "",
    group: bool = False,
    global_only: bool = False,
    page_size: int | None = None,
    timeout: float | None = None,
) -> Pages[ac.RoleBinding]:
    """Iterate over role bindings (of one namespace, one subject, or all)."""
    kind = ac.SUBJECT_KIND_GROUP if group else ac.SUBJECT_KIND_PRINCIPAL

    def page(token: str) -> Message:
        return ac.ListRoleBindingsRequest(
            namespace=namespace,
            subject=subject,
            subject_kind=kind,
            global_only=global_only,
            page_size=page_size or 0,
            page_token=token,
        )

    return Pages("ListRoleBindings", page, lambda r: r.bindings, timeout, ACCESS)


def explain(
    method: str,
    resource: str = "",
    *,
    principal: str = "",
    groups: tuple[str, ...] = (),
    timeout: float | None = None,
) -> Call[ac.ExplainAccessResponse]:
    """Whether `principal` (default: you) may call `method` on `resource`, and which
    binding decides. `method` is a full name or `Service/Method` or a bare method name
    of RegistryService (`SetAlias`)."""
    request = ac.ExplainAccessRequest(
        principal=principal, groups=list(groups), method=method_name(method), resource=resource
    )
    return Call("ExplainAccess", request, lambda r: r, True, timeout, ACCESS)


def method_name(method: str) -> str:
    """The full method name from `SetAlias`, `RegistryService/SetAlias` or itself."""
    if method.startswith("/"):
        return method
    if "/" not in method:
        return f"/modelreg.v1.RegistryService/{method}"
    service, _, name = method.partition("/")
    service = service if "." in service else f"modelreg.v1.{service}"
    return f"/{service}/{name}"
