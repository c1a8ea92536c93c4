"""Commands on versions and aliases, and lookups (resolve, batch-get)."""

from __future__ import annotations

import argparse

from modelreg.cli.commands import (
    EXIT_PARTIAL,
    Commands,
    add_etag,
    add_guarded,
    add_limit,
    add_metadata,
    key_value,
    limited,
    metric,
    page_size,
    pairs,
)
from modelreg.cli.output import (
    ALIAS_COLUMNS,
    BATCH_COLUMNS,
    CHANGE_REQUEST_COLUMNS,
    EVENT_COLUMNS,
    VERSION_COLUMNS,
    Listing,
    Output,
    field_text,
)
from modelreg.client import Client
from modelreg.v1 import resources_pb2 as res


def _source(args: argparse.Namespace) -> res.VersionSource | None:
    fields = {
        "run_id": args.run_id,
        "code_commit": args.code_commit,
        "framework": args.framework,
        "framework_version": args.framework_version,
    }
    given = {key: value for key, value in fields.items() if value is not None}
    return res.VersionSource(**given) if given else None


def _versions_create(client: Client, args: argparse.Namespace) -> Output:
    return client.create_version(
        args.model,
        ready=args.ready,
        description=args.description,
        tags=args.tag,
        labels=pairs(args.label),
        metrics=pairs(args.metric),
        params=pairs(args.param),
        source=_source(args),
    )


def _versions_get(client: Client, args: argparse.Namespace) -> Output:
    return client.get_version(args.version)


def _versions_list(client: Client, args: argparse.Namespace) -> Output:
    items = client.list_versions(
        args.model,
        states=args.state or (),
        order_by=args.order_by or ("number" if args.oldest_first else ""),
        filter=args.filter or "",
        page_size=page_size(args),
    )
    return Listing(VERSION_COLUMNS, limited(items, args.limit))


def _search(client: Client, args: argparse.Namespace) -> Output:
    items = client.search_versions(
        args.filter, order_by=args.order_by or "", page_size=page_size(args)
    )
    return Listing(VERSION_COLUMNS, limited(items, args.limit))


def _versions_update(client: Client, args: argparse.Namespace) -> Output:
    return client.update_version(
        args.version,
        description=args.description,
        tags=args.tag,
        labels=pairs(args.label),
        metrics=pairs(args.metric),
        params=pairs(args.param),
        etag=args.etag,
    )


def _versions_archive(client: Client, args: argparse.Namespace) -> Output:
    return client.archive_version(args.version, etag=args.etag)


def _versions_restore(client: Client, args: argparse.Namespace) -> Output:
    return client.restore_version(args.version, etag=args.etag)


def _alias_set(client: Client, args: argparse.Namespace) -> Output:
    return client.set_alias(
        args.model, args.alias, args.number, etag=args.etag, expected_version=args.expect
    )


def _alias_delete(client: Client, args: argparse.Namespace) -> Output:
    return client.delete_alias(args.model, args.alias, etag=args.etag)


def _alias_list(client: Client, args: argparse.Namespace) -> Output:
    return Listing(ALIAS_COLUMNS, client.list_aliases(args.model))


def _alias_history(client: Client, args: argparse.Namespace) -> Output:
    items = client.alias_history(args.model, args.alias, page_size=page_size(args))
    return Listing(EVENT_COLUMNS, limited(items, args.limit))


def _alias_rollback(client: Client, args: argparse.Namespace) -> Output:
    return client.rollback_alias(args.model, args.alias, etag=args.etag)


def _alias_request(client: Client, args: argparse.Namespace) -> Output:
    return client.request_alias_move(args.model, args.alias, args.number, reason=args.reason)


def _alias_approve(client: Client, args: argparse.Namespace) -> Output:
    return client.approve(args.request, comment=args.comment)


def _alias_reject(client: Client, args: argparse.Namespace) -> Output:
    return client.reject(args.request, reason=args.reason)


def _alias_requests(client: Client, args: argparse.Namespace) -> Output:
    return Listing(CHANGE_REQUEST_COLUMNS, client.list_change_requests(args.parent))


def _alias_protect(client: Client, args: argparse.Namespace) -> Output:
    policy = client.get_alias_policy(args.model)
    aliases = sorted({*policy.aliases, *args.aliases})
    return client.set_alias_policy(args.model, aliases, approvals=args.approvals)


def _alias_unprotect(client: Client, args: argparse.Namespace) -> Output:
    policy = client.get_alias_policy(args.model)
    aliases = [a for a in policy.aliases if a not in args.aliases]
    return client.set_alias_policy(args.model, aliases, approvals=policy.approvals or 1)


def _resolve(client: Client, args: argparse.Namespace) -> Output:
    return client.resolve(args.reference, strong=args.strong)


def _batch_get(client: Client, args: argparse.Namespace) -> Output:
    results = client.batch_get(args.references, strong=args.strong)
    notes = [
        f"error: {result.reference}: {field_text(result, 'error')}"
        for result in results
        if result.HasField("error")
    ]
    if notes:
        notes.append(f"batch-get: {len(notes)} of {len(results)} references failed (exit status 4)")
    return Listing(BATCH_COLUMNS, results, EXIT_PARTIAL if notes else 0, notes)


def _add_version_metadata(parser: argparse.ArgumentParser, *, update: bool = False) -> None:
    add_metadata(parser, update=update)
    parser.add_argument("--metric", action="append", type=metric, metavar="K=NUMBER")
    parser.add_argument("--param", action="append", type=key_value, metavar="K=V")


def add_versions(commands: Commands) -> None:
    group = commands.group("versions", "create, get, list, update, archive and restore versions")
    create = group.remote("create", _versions_create, "create the next version of a model")
    create.add_argument("model", metavar="NS/MODEL")
    create.add_argument("--ready", action="store_true", help="create it READY, not PENDING")
    _add_version_metadata(create)
    for option in ("--run-id", "--code-commit", "--framework", "--framework-version"):
        create.add_argument(option)
    get = group.remote("get", _versions_get, "show a version")
    get.add_argument("version", metavar="REF", help="ns/model:N or a version resource name")
    listing = group.remote("list", _versions_list, "list the versions of a model, newest first")
    listing.add_argument("model", metavar="NS/MODEL")
    listing.add_argument(
        "--state", action="append", choices=["pending", "ready", "failed", "archived"]
    )
    listing.add_argument("--oldest-first", action="store_true")
    listing.add_argument(
        "--filter", metavar="FILTER", help=f"only versions matching it ({_FILTERS})"
    )
    listing.add_argument("--order-by", help="with --filter: number, create_time, update_time or "
                         "metrics.<key>, then asc or desc")  # fmt: skip
    add_limit(listing)
    update, *_ = add_guarded(
        group,
        ("version", "NS/MODEL:N"),
        ("update", _versions_update, "change a version's metadata"),
        ("archive", _versions_archive, "archive a READY version"),
        ("restore", _versions_restore, "restore an ARCHIVED version"),
    )
    _add_version_metadata(update, update=True)


_FILTERS = "AIP-160, e.g. 'labels.team = \"vision\" AND metrics.accuracy >= 0.9'"


def add_search(commands: Commands) -> None:
    search = commands.remote(
        "search", _search, "search versions across the namespaces you may read, newest first"
    )
    search.add_argument("filter", metavar="FILTER", nargs="?", default="", help=_FILTERS)
    search.add_argument("--order-by", help="create_time (default), update_time, number or "
                        "metrics.<key>, ascending or with desc after it")  # fmt: skip
    add_limit(search)


def _add_alias_target(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("model", metavar="NS/MODEL")
    parser.add_argument("alias", metavar="ALIAS")
    return parser


def add_aliases(commands: Commands) -> None:
    group = commands.group("alias", "move, delete, list and roll back aliases")
    set_ = _add_alias_target(group.remote("set", _alias_set, "point an alias at a version"))
    set_.add_argument("number", metavar="N", type=int)
    set_.add_argument("--expect", type=int, metavar="N", help="only if it points at N now (0: new)")
    add_etag(set_)
    add_etag(_add_alias_target(group.remote("delete", _alias_delete, "delete an alias")))
    group.remote("list", _alias_list, "list a model's aliases").add_argument("model")
    history = group.remote("history", _alias_history, "list an alias's moves, newest first")
    add_limit(_add_alias_target(history))
    rollback = group.remote("rollback", _alias_rollback, "move an alias back to where it was")
    add_etag(_add_alias_target(rollback))
    request = _add_alias_target(
        group.remote("request", _alias_request, "ask for a move of a protected alias")
    )
    request.add_argument("number", metavar="N", type=int)
    request.add_argument("--reason", required=True)
    approve = group.remote("approve", _alias_approve, "approve a change request (not your own)")
    approve.add_argument("request", metavar="REQUEST", help="the change request's name")
    approve.add_argument("--comment", default="")
    reject = group.remote("reject", _alias_reject, "reject a change request (not your own)")
    reject.add_argument("request", metavar="REQUEST")
    reject.add_argument("--reason", required=True)
    requests = group.remote("requests", _alias_requests, "list change requests, newest first")
    requests.add_argument("parent", metavar="PARENT", help="namespaces/ns[/models/m[/aliases/a]]")
    protect = group.remote("protect", _alias_protect, "protect aliases of a model")
    protect.add_argument("model", metavar="NS/MODEL")
    protect.add_argument("aliases", metavar="ALIAS", nargs="+")
    protect.add_argument("--approvals", type=int, default=1, metavar="N")
    unprotect = group.remote("unprotect", _alias_unprotect, "stop protecting aliases of a model")
    unprotect.add_argument("model", metavar="NS/MODEL")
    unprotect.add_argument("aliases", metavar="ALIAS", nargs="+")


def add_lookups(commands: Commands) -> None:
    resolve = commands.remote("resolve", _resolve, "show the version a reference points to")
    resolve.add_argument("reference", metavar="REF", help="ns/model@alias, ns/model:N or ns/model")
    batch = commands.remote(
        "batch-get",
        _batch_get,
        "resolve many references at once; a row per reference, found or not (exit status 4"
        " when some failed, each also named on stderr)",
    )
    batch.add_argument("references", metavar="REF", nargs="+")
    for parser in (resolve, batch):
        parser.add_argument("--strong", action="store_true", help="skip the caches")
