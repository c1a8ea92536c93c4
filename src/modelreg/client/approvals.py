"""Request builders for ApprovalService (each builder's docstring is its method's).
Aliases are named `ns/model` + alias; change requests by their resource name."""

from __future__ import annotations

from collections.abc import Iterable

from modelreg.client.calls import APPROVALS, Call
from modelreg.client.names import alias_name, model_name
from modelreg.v1 import approval_service_pb2 as ap


def set_alias_policy(
    model: str, aliases: Iterable[str], *, approvals: int = 1, timeout: float | None = None
) -> Call[ap.AliasPolicy]:
    """Protect `aliases` of `model` (`ns/model`): moves need `approvals` approvals. An
    empty list unprotects every alias of the model."""
    policy = ap.AliasPolicy(
        name=f"{model_name(model)}/aliasPolicy", aliases=list(aliases), approvals=approvals
    )
    request = ap.SetAliasPolicyRequest(policy=policy)
    return Call("SetAliasPolicy", request, lambda r: r.policy, True, timeout, APPROVALS)


def get_alias_policy(model: str, *, timeout: float | None = None) -> Call[ap.AliasPolicy]:
    """The policy stored for `model` (`ns/model`)."""
    request = ap.GetAliasPolicyRequest(name=f"{model_name(model)}/aliasPolicy")
    return Call("GetAliasPolicy", request, lambda r: r.policy, True, timeout, APPROVALS)


def request_alias_move(
    model: str, alias: str, version_number: int, *, reason: str, timeout: float | None = None
) -> Call[ap.ChangeRequest]:
    """Ask for a move of a protected alias, bound to the version's digest. Not retried
    once sent (a retry would make a second request)."""
    request = ap.CreateChangeRequestRequest(
        parent=alias_name(model, alias), version_number=version_number, reason=reason
    )
    return Call(
        "CreateChangeRequest", request, lambda r: r.change_request, False, timeout, APPROVALS
    )


def approve(
    name: str, *, comment: str = "", timeout: float | None = None
) -> Call[ap.ChangeRequest]:
    """Approve a change request (never your own); the last needed approval moves the alias."""
    request = ap.ApproveChangeRequestRequest(name=name, comment=comment)
    return Call(
        "ApproveChangeRequest", request, lambda r: r.change_request, False, timeout, APPROVALS
    )


def reject(name: str, *, reason: str, timeout: float | None = None) -> Call[ap.ChangeRequest]:
    """Reject a change request (never your own)."""
    request = ap.RejectChangeRequestRequest(name=name, reason=reason)
    return Call(
        "RejectChangeRequest", request, lambda r: r.change_request, False, timeout, APPROVALS
    )


def list_change_requests(
    parent: str, *, state: int = 0, page_size: int = 0, timeout: float | None = None
) -> Call[list[ap.ChangeRequest]]:
    """The first page of change requests under `parent` (a resource name), newest first."""
    request = ap.ListChangeRequestsRequest(parent=parent, state=state, page_size=page_size)  # type: ignore[arg-type]
    return Call(
        "ListChangeRequests", request, lambda r: list(r.change_requests), True, timeout, APPROVALS
    )
