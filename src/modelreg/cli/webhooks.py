"""`modelreg webhooks ...`: subscriptions, their delivery log, redelivery."""

from __future__ import annotations

import argparse
import sys

from modelreg.cli.commands import Commands, add_limit, limited, page_size
from modelreg.cli.output import Column, Listing, Output, Summary, format_fields
from modelreg.client import Client
from modelreg.client.names import alias_name, model_name, namespace_name

WEBHOOK_COLUMNS = (
    Column("NAME", "name"),
    Column("URL", "url", 60),
    Column("DELIVERED", "delivered_revision"),
    Column("CREATED", "create_time"),
)
DELIVERY_COLUMNS = (
    Column("DELIVERY", "name"),
    Column("REVISION", "revision"),
    Column("KIND", "kind"),
    Column("ATTEMPT", "attempt"),
    Column("STATUS", "http_status"),
    Column("ERROR", "error", 40),
    Column("LATENCY", "latency"),
    Column("TIME", "attempt_time"),
    Column("NEXT", "next_attempt_time"),
)
SECRET_WARNING = (
    "warning: this is the only time the signing secret is shown; store it where the"
    " receiver verifies signatures (Standard Webhooks)"
)


def _alias(text: str) -> str:
    model, sep, alias = text.rpartition("@")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected MODEL@ALIAS, got {text!r}")
    return alias_name(model, alias)


def _create(client: Client, args: argparse.Namespace) -> Output:
    reply = client.create_webhook(
        args.url,
        webhook_id=args.id,
        namespaces=[namespace_name(ns) for ns in args.namespace],
        models=[model_name(m) for m in args.model],
        aliases=args.alias,
        kinds=args.kind,
        description=args.description,
    )
    print(SECRET_WARNING, file=sys.stderr)
    return Summary(reply, f"{format_fields(reply.webhook)}\nsecret: {reply.secret}")


def _get(client: Client, args: argparse.Namespace) -> Output:
    return client.get_webhook(args.webhook)


def _list(client: Client, args: argparse.Namespace) -> Output:
    items = client.list_webhooks(page_size=page_size(args))
    return Listing(WEBHOOK_COLUMNS, limited(items, args.limit))


def _delete(client: Client, args: argparse.Namespace) -> Output:
    reply = client.delete_webhook(args.webhook)
    return Summary(reply, f"deleted {args.webhook}")


def _deliveries(client: Client, args: argparse.Namespace) -> Output:
    items = client.list_deliveries(args.webhook, page_size=page_size(args))
    return Listing(DELIVERY_COLUMNS, limited(items, args.limit))


def _redeliver(client: Client, args: argparse.Namespace) -> Output:
    if (args.delivery is None) == (args.from_revision is None):
        raise SystemExit("error: give a DELIVERY or --from-revision N (one of them)")
    webhook = client.redeliver(
        args.webhook, delivery=args.delivery, from_revision=args.from_revision
    )
    what = args.delivery or f"every event from revision {args.from_revision}"
    return Summary(webhook, f"{webhook.name}: {what} will be sent again")


def add_webhooks(commands: Commands) -> None:
    group = commands.group("webhooks", "signed webhooks fed from the change log")
    create = group.remote("create", _create, "subscribe a URL; prints its secret once")
    create.add_argument("url", metavar="URL", help="http(s) URL the events are POSTed to")
    create.add_argument("--id", default="", help="webhook id (default: the server picks one)")
    for flag, metavar, kind in (
        ("--namespace", "NS", str),
        ("--model", "MODEL", str),
        ("--alias", "MODEL@ALIAS", _alias),
        ("--kind", "KIND", str),
    ):
        create.add_argument(
            flag, action="append", default=[], metavar=metavar, type=kind, help="repeatable"
        )
    create.add_argument("--description", default="")
    group.remote("get", _get, "show a subscription").add_argument("webhook", metavar="WEBHOOK")
    add_limit(group.remote("list", _list, "list subscriptions"))
    group.remote("delete", _delete, "delete a subscription").add_argument(
        "webhook", metavar="WEBHOOK"
    )
    deliveries = group.remote("deliveries", _deliveries, "delivery attempts, newest first")
    deliveries.add_argument("webhook", metavar="WEBHOOK")
    add_limit(deliveries)
    redeliver = group.remote("redeliver", _redeliver, "send events again (same webhook-ids)")
    redeliver.add_argument("webhook", metavar="WEBHOOK")
    redeliver.add_argument(
        "delivery", nargs="?", metavar="DELIVERY", help="a delivery's name or number"
    )
    redeliver.add_argument("--from-revision", type=int, metavar="N")
