"""`modelreg access ...`: grant and revoke roles, list bindings, explain a decision."""

from __future__ import annotations

import argparse

from modelreg.cli.commands import Commands, add_limit, limited, page_size
from modelreg.cli.output import Column, Listing, Output, Summary
from modelreg.client import Client
from modelreg.client.access import ROLE_NAMES, ROLES
from modelreg.v1 import access_service_pb2 as ac

BINDING_COLUMNS = (
    Column("NAMESPACE", "namespace"),
    Column("SUBJECT_KIND", "subject_kind"),
    Column("SUBJECT", "subject", 60),
    Column("ROLE", "role"),
    Column("CREATED_BY", "created_by"),
    Column("CREATED", "create_time"),
)


def describe(binding: ac.RoleBinding) -> str:
    """`editor for group ml-team in namespace ml`."""
    who = binding.subject
    if binding.subject_kind == ac.SUBJECT_KIND_GROUP:
        who = f"group {who}"
    where = f"in namespace {binding.namespace}" if binding.namespace else "globally"
    return f"{ROLE_NAMES.get(binding.role, '?')} for {who} {where}"


def _grant(client: Client, args: argparse.Namespace) -> Output:
    reply = client.grant(args.role, args.subject, group=args.group, namespace=args.namespace)
    return Summary(reply, f"granted {describe(reply.binding)} (revision {reply.revision})")


def _revoke(client: Client, args: argparse.Namespace) -> Output:
    reply = client.revoke(args.role, args.subject, group=args.group, namespace=args.namespace)
    return Summary(reply, f"revoked {describe(reply.binding)} (revision {reply.revision})")


def _list(client: Client, args: argparse.Namespace) -> Output:
    items = client.list_bindings(
        namespace=args.namespace,
        subject=args.subject,
        group=args.group,
        global_only=args.global_only,
        page_size=page_size(args),
    )
    return Listing(BINDING_COLUMNS, limited(items, args.limit))


def _explain(client: Client, args: argparse.Namespace) -> Output:
    reply = client.explain_access(
        args.method, args.resource, principal=args.principal, groups=tuple(args.in_group)
    )
    verdict = "ALLOWED" if reply.allowed else "DENIED"
    lines = [f"{verdict}: {reply.reason}"]
    if reply.permission:
        lines.append(f"permission: {reply.permission}")
    if reply.HasField("binding"):
        lines.append(f"binding: {describe(reply.binding)}")
    return Summary(reply, "\n".join(lines))


def _subject_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("role", choices=sorted(ROLES, key=list(ROLES).index), metavar="ROLE")
    parser.add_argument(
        "subject", metavar="SUBJECT", help="a principal (or, with --group, a group)"
    )
    parser.add_argument("--group", action="store_true", help="SUBJECT is a group")
    parser.add_argument("--namespace", default="", metavar="NS", help="default: global")


def add_access(commands: Commands) -> None:
    group = commands.group("access", "roles: who may do what, and why")
    _subject_args(group.remote("grant", _grant, "bind a role (viewer, editor, approver, admin)"))
    _subject_args(group.remote("revoke", _revoke, "remove a role binding"))
    listing = group.remote("list", _list, "list role bindings")
    listing.add_argument("--namespace", default="", metavar="NS")
    listing.add_argument("--subject", default="", metavar="SUBJECT")
    listing.add_argument("--group", action="store_true", help="--subject is a group")
    listing.add_argument("--global", dest="global_only", action="store_true", help="only global")
    add_limit(listing)
    explain = group.remote("explain", _explain, "may a principal call METHOD on RESOURCE, and why")
    explain.add_argument(
        "method", metavar="METHOD", help="e.g. SetAlias or AccessService/ListRoleBindings"
    )
    explain.add_argument(
        "resource", nargs="?", default="", metavar="RESOURCE", help="a name or ns/model@alias"
    )
    explain.add_argument("--principal", default="", help="whom to ask about (admins; default: you)")
    explain.add_argument(
        "--in-group", action="append", default=[], metavar="GROUP", help="repeatable"
    )
