"""`modelreg whoami` and `modelreg keys ...`: who the server takes you for, and API keys."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import timedelta

from modelreg.cli.commands import Commands, add_limit, limited, page_size
from modelreg.cli.output import Column, Listing, Output, Summary, format_fields
from modelreg.client import Client

KEY_COLUMNS = (
    Column("KEY_ID", "key_id"),
    Column("PRINCIPAL", "principal"),
    Column("KIND", "kind"),
    Column("CREATED", "create_time"),
    Column("EXPIRES", "expire_time"),
    Column("REVOKED", "revoke_time"),
    Column("DESCRIPTION", "description", 40),
)
KEY_WARNING = (
    "warning: this is the only time the key is shown; it will not be shown again. Give it"
    " to its user, who sets MODELREG_TOKEN to it (or passes token= to the SDK)"
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def ttl(text: str) -> timedelta:
    """argparse type of `30d`, `12h`, `90m`, `45s`, `2w`."""
    match = re.fullmatch(r"([1-9][0-9]{0,8})([smhdw])", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30d or 12h, got {text!r}")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def _whoami(client: Client, args: argparse.Namespace) -> Output:
    me = client.whoami()
    return Summary(me, format_fields(me))


def _create(client: Client, args: argparse.Namespace) -> Output:
    reply = client.create_api_key(
        args.principal, service=args.service, description=args.description, ttl=args.ttl
    )
    print(KEY_WARNING, file=sys.stderr)
    return Summary(reply, f"{format_fields(reply.api_key)}\nkey: {reply.key}")


def _list(client: Client, args: argparse.Namespace) -> Output:
    items = client.list_api_keys(principal=args.principal, page_size=page_size(args))
    return Listing(KEY_COLUMNS, limited(items, args.limit))


def _revoke(client: Client, args: argparse.Namespace) -> Output:
    key = client.revoke_api_key(args.key_id)
    return Summary(key, f"revoked {key.key_id} of {key.principal}")


def add_keys(commands: Commands) -> None:
    commands.remote("whoami", _whoami, "who the registry takes you for, and how it knows")
    group = commands.group("keys", "API keys: create (shown once), list, revoke")
    create = group.remote("create", _create, "make an API key for NAME; prints it once")
    create.add_argument("principal", metavar="NAME", help="the person or service account")
    create.add_argument("--service", action="store_true", help="NAME is a service account")
    create.add_argument("--ttl", type=ttl, help="expire after this long: 30d, 12h, 90m, 2w")
    create.add_argument("--description", default="", help="what the key is for")
    listing = group.remote("list", _list, "list API keys, newest first (never their secrets)")
    listing.add_argument("--principal", default="", help="only this principal's keys")
    add_limit(listing)
    group.remote(
        "revoke", _revoke, "revoke an API key; refused from its next call on"
    ).add_argument("key_id", metavar="KEY_ID", help="as `keys list` shows it")
