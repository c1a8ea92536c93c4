"""Commands on namespaces and models."""

from __future__ import annotations

import argparse

from modelreg.cli.commands import (
    Commands,
    add_guarded,
    add_limit,
    add_metadata,
    limited,
    page_size,
    pairs,
)
from modelreg.cli.output import MODEL_COLUMNS, NAMESPACE_COLUMNS, Listing, Output
from modelreg.client import Client


def _namespaces_create(client: Client, args: argparse.Namespace) -> Output:
    return client.create_namespace(args.namespace, description=args.description)


def _namespaces_get(client: Client, args: argparse.Namespace) -> Output:
    return client.get_namespace(args.namespace)


def _namespaces_list(client: Client, args: argparse.Namespace) -> Output:
    items = client.list_namespaces(page_size=page_size(args))
    return Listing(NAMESPACE_COLUMNS, limited(items, args.limit))


def _models_create(client: Client, args: argparse.Namespace) -> Output:
    return client.create_model(
        args.model, description=args.description, tags=args.tag, labels=pairs(args.label)
    )


def _models_get(client: Client, args: argparse.Namespace) -> Output:
    return client.get_model(args.model)


def _models_list(client: Client, args: argparse.Namespace) -> Output:
    items = client.list_models(
        args.namespace,
        prefix=args.prefix,
        tags=args.tag,
        order_by=args.order_by,
        show_deleted=args.show_deleted,
        filter=args.filter or "",
        page_size=page_size(args),
    )
    return Listing(MODEL_COLUMNS, limited(items, args.limit))


def _models_update(client: Client, args: argparse.Namespace) -> Output:
    return client.update_model(
        args.model,
        description=args.description,
        tags=args.tag,
        labels=pairs(args.label),
        etag=args.etag,
    )


def _models_delete(client: Client, args: argparse.Namespace) -> Output:
    return client.delete_model(args.model, etag=args.etag)


def _models_undelete(client: Client, args: argparse.Namespace) -> Output:
    return client.undelete_model(args.model, etag=args.etag)


def add_namespaces(commands: Commands) -> None:
    group = commands.group("namespaces", "create, get and list namespaces")
    create = group.remote("create", _namespaces_create, "create a namespace")
    create.add_argument("namespace", metavar="NS")
    create.add_argument("--description", default="")
    group.remote("get", _namespaces_get, "show a namespace").add_argument("namespace", metavar="NS")
    add_limit(group.remote("list", _namespaces_list, "list namespaces"))


def add_models(commands: Commands) -> None:
    group = commands.group("models", "create, get, list, update and delete models")
    create = group.remote("create", _models_create, "create a model")
    create.add_argument("model", metavar="NS/MODEL")
    add_metadata(create)
    group.remote("get", _models_get, "show a model").add_argument("model", metavar="NS/MODEL")
    listing = group.remote("list", _models_list, "list the models of a namespace")
    listing.add_argument(
        "namespace",
        metavar="NS",
        nargs="?",
        default="default",
        help="namespace (default: %(default)s)",
    )
    listing.add_argument("--prefix", default="", help="only model ids starting with this")
    listing.add_argument("--tag", action="append", default=[], help="only models with this tag")
    listing.add_argument(
        "--order-by", default="", help="name (the default), create_time or 'create_time desc'"
    )
    listing.add_argument("--show-deleted", action="store_true")
    listing.add_argument(
        "--filter",
        metavar="FILTER",
        help="only models matching it (AIP-160 on name, create_time, update_time, tags,"
        " labels.<key>, alias: 'labels.team = vision AND alias:production')",
    )
    add_limit(listing)
    update, *_ = add_guarded(
        group,
        ("model", "NS/MODEL"),
        ("update", _models_update, "change a model's metadata"),
        ("delete", _models_delete, "soft-delete a model"),
        ("undelete", _models_undelete, "restore a soft-deleted model"),
    )
    add_metadata(update, update=True)
