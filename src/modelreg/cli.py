"""The `modelreg` command: run the server, migrate its database, and call it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeVar, cast

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict, MessageToJson
from google.protobuf.message import Message

from modelreg.client import Client, RegistryError, UnavailableError, error_from_status
from modelreg.v1 import resources_pb2 as res

if TYPE_CHECKING:  # imported when a local command runs: the client commands stay light
    from modelreg.config import Settings

DEFAULT_TARGET = "127.0.0.1:50051"
EXIT_FAILED = 1  # the registry refused the request, or a batch had a failed reference
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_UNREACHABLE = 3  # no server answered at --target

EPILOG = f"""\
exit status:
  0  success
  {EXIT_FAILED}  the registry refused the request (`error: CODE: message` on stderr),
     or some reference of a batch-get failed
  {EXIT_USAGE}  bad command line
  {EXIT_UNREACHABLE}  no registry answered at --target
     (env MODELREG_TARGET, default {DEFAULT_TARGET})
"""

_T = TypeVar("_T")


# --- output ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: header, field path (`version.state`), and an optional width cap."""

    header: str
    path: str
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Listing:
    """A command's list output: messages shown as a table, or a JSON array."""

    columns: Sequence[Column]
    items: Sequence[Message]
    exit_code: int = 0


Output = Message | Listing

NAMESPACE_COLUMNS = (Column("NAME", "name"), Column("DESCRIPTION", "description", 50))
MODEL_COLUMNS = (
    Column("NAME", "name"),
    Column("LATEST", "latest_version_number"),
    Column("TAGS", "tags", 40),
    Column("CREATED", "create_time"),
    Column("DELETED", "delete_time"),
)
VERSION_COLUMNS = (
    Column("NAME", "name"),
    Column("NUMBER", "number"),
    Column("STATE", "state"),
    Column("DIGEST", "digest", 20),
    Column("CREATED", "create_time"),
)
ALIAS_COLUMNS = (
    Column("NAME", "name"),
    Column("VERSION", "version_number"),
    Column("UPDATER", "updater"),
    Column("UPDATED", "update_time"),
)
EVENT_COLUMNS = (
    Column("EVENT", "event_id"),
    Column("FROM", "previous_version_number"),
    Column("TO", "version_number"),
    Column("ACTOR", "actor"),
    Column("TIME", "time"),
)
BATCH_COLUMNS = (
    Column("REFERENCE", "reference"),
    Column("VERSION", "version.name"),
    Column("STATE", "version.state"),
    Column("DIGEST", "version.digest", 20),
    Column("ERROR", "error"),
)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart, under a header row."""
    table = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table)
    return "\n".join(line.rstrip() for line in lines)


def format_fields(message: Message) -> str:
    """Every set field of a message, one `key: value` per line, nested ones as `a.b`."""
    pairs = list(_field_pairs(message, ""))
    width = max((len(key) for key, _ in pairs), default=0) + 1
    return "\n".join(f"{key + ':':<{width}} {value}" for key, value in pairs)


def format_listing(listing: Listing) -> str:
    """A listing as a table."""
    headers = [column.header for column in listing.columns]
    rows = ([_cell(item, column) for column in listing.columns] for item in listing.items)
    return format_table(headers, rows)


def render(output: Output, *, as_json: bool) -> str:
    """The text to print for a command's output."""
    if isinstance(output, Listing):
        if as_json:
            return json.dumps([MessageToDict(item) for item in output.items], indent=2)
        return format_listing(output)
    return MessageToJson(output) if as_json else format_fields(output)


def field_text(message: Message, path: str) -> str:
    """The field at `path` (`a.b.c`) as short text; "" when it is unset."""
    head, _, rest = path.partition(".")
    field = _field(message, head)
    if _is_single_message(field) and not message.HasField(head):
        return ""
    value = getattr(message, head)
    return field_text(value, rest) if rest else _text(field, value)


def _cell(message: Message, column: Column) -> str:
    text = field_text(message, column.path)
    if column.limit is not None and len(text) > column.limit:
        return text[: column.limit - 1] + "…"
    return text


def _field_pairs(message: Message, prefix: str) -> Iterator[tuple[str, str]]:
    for field in _fields(message):
        if _is_single_message(field) and not _is_leaf(field):
            if message.HasField(field.name):
                yield from _field_pairs(getattr(message, field.name), f"{prefix}{field.name}.")
            continue
        text = field_text(message, field.name)
        if text:
            yield prefix + field.name, text


# The stubs type a descriptor as the pure-Python or the upb class; the two behave alike.
def _field(message: Message, name: str) -> FieldDescriptor:
    return cast(FieldDescriptor, message.DESCRIPTOR.fields_by_name[name])


def _fields(message: Message) -> Sequence[FieldDescriptor]:
    return cast(Sequence[FieldDescriptor], message.DESCRIPTOR.fields)


def _is_single_message(field: FieldDescriptor) -> bool:
    return field.message_type is not None and not field.is_repeated


def _is_leaf(field: FieldDescriptor) -> bool:
    """Messages shown as one value: a time, or a google.rpc.Status."""
    kind = field.message_type
    return kind is not None and kind.full_name in {"google.protobuf.Timestamp", "google.rpc.Status"}


def _text(field: FieldDescriptor, value: Any) -> str:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return ", ".join(f"{key}={_scalar(value[key])}" for key in sorted(value))
    if field.is_repeated:
        return ", ".join(_scalar(item) for item in value)
    if field.enum_type is not None:
        return _enum_text(field.enum_type, value)
    if field.message_type is None:
        return _scalar(value)
    if field.message_type.full_name == "google.protobuf.Timestamp":
        return str(value.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%SZ"))
    error = error_from_status(value)  # google.rpc.Status
    return f"{error.code.name}: {error.message}"


def _enum_text(enum: EnumDescriptor, value: int) -> str:
    """`MODEL_VERSION_STATE_READY` -> `READY`; "" for the UNSPECIFIED zero value."""
    if value == 0:
        return ""
    prefix = enum.values_by_number[0].name.removesuffix("UNSPECIFIED")
    return str(enum.values_by_number[value].name).removeprefix(prefix)


def _scalar(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool):
        return str(value).lower() if value else ""
    return str(value)


# --- argument types -------------------------------------------------------------------------


def key_value(text: str) -> tuple[str, str]:
    """argparse type of `k=v`."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def metric(text: str) -> tuple[str, float]:
    """argparse type of `name=0.91`."""
    key, value = key_value(text)
    try:
        return key, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"metric {key!r} needs a number, got {value!r}") from None


def _pairs(items: list[tuple[str, _T]] | None) -> dict[str, _T] | None:
    return None if items is None else dict(items)


def _limited(items: Iterator[_T], limit: int | None) -> list[_T]:
    return list(islice(items, limit))


def _page_size(args: argparse.Namespace) -> int | None:
    return None if args.limit is None else min(args.limit, 1000)


# --- client commands ------------------------------------------------------------------------

Handler = Callable[[Client, argparse.Namespace], Output]


def _namespaces_create(client: Client, args: argparse.Namespace) -> Output:
    return client.create_namespace(args.namespace, description=args.description)


def _namespaces_get(client: Client, args: argparse.Namespace) -> Output:
    return client.get_namespace(args.namespace)


def _namespaces_list(client: Client, args: argparse.Namespace) -> Output:
    items = client.list_namespaces(page_size=_page_size(args))
    return Listing(NAMESPACE_COLUMNS, _limited(items, args.limit))


def _models_create(client: Client, args: argparse.Namespace) -> Output:
    return client.create_model(
        args.model, description=args.description, tags=args.tag, labels=_pairs(args.label)
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
        page_size=_page_size(args),
    )
    return Listing(MODEL_COLUMNS, _limited(items, args.limit))


def _models_update(client: Client, args: argparse.Namespace) -> Output:
    return client.update_model(
        args.model,
        description=args.description,
        tags=args.tag,
        labels=_pairs(args.label),
        etag=args.etag,
    )


def _models_delete(client: Client, args: argparse.Namespace) -> Output:
    return client.delete_model(args.model, etag=args.etag)


def _models_undelete(client: Client, args: argparse.Namespace) -> Output:
    return client.undelete_model(args.model, etag=args.etag)


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
        labels=_pairs(args.label),
        metrics=_pairs(args.metric),
        params=_pairs(args.param),
        source=_source(args),
    )


def _versions_get(client: Client, args: argparse.Namespace) -> Output:
    return client.get_version(args.version)


def _versions_list(client: Client, args: argparse.Namespace) -> Output:
    items = client.list_versions(
        args.model,
        states=args.state or (),
        order_by="number" if args.oldest_first else "",
        page_size=_page_size(args),
    )
    return Listing(VERSION_COLUMNS, _limited(items, args.limit))


def _versions_update(client: Client, args: argparse.Namespace) -> Output:
    return client.update_version(
        args.version,
        description=args.description,
        tags=args.tag,
        labels=_pairs(args.label),
        metrics=_pairs(args.metric),
        params=_pairs(args.param),
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
    items = client.alias_history(args.model, args.alias, page_size=_page_size(args))
    return Listing(EVENT_COLUMNS, _limited(items, args.limit))


def _alias_rollback(client: Client, args: argparse.Namespace) -> Output:
    return client.rollback_alias(args.model, args.alias, etag=args.etag)


def _resolve(client: Client, args: argparse.Namespace) -> Output:
    return client.resolve(args.reference, strong=args.strong)


def _batch_get(client: Client, args: argparse.Namespace) -> Output:
    results = client.batch_get(args.references, strong=args.strong)
    failed = any(result.HasField("error") for result in results)
    return Listing(BATCH_COLUMNS, results, EXIT_FAILED if failed else 0)


def run_remote(handler: Handler, args: argparse.Namespace) -> int:
    """Run a client command against `--target`; print its output or its error."""
    try:
        with Client(args.target, timeout=args.timeout) as client:
            output = handler(client, args)
    except RegistryError as exc:
        return _report(exc, args.target)
    print(render(output, as_json=args.json))
    return output.exit_code if isinstance(output, Listing) else 0


def _report(exc: RegistryError, target: str) -> int:
    """Print an error to stderr; return the exit status."""
    if isinstance(exc, UnavailableError) and not exc.reason:
        print(
            f"error: UNAVAILABLE: no registry answered at {target}; is it running? "
            "Set --target or MODELREG_TARGET to reach another.\n"
            f"  detail: {exc.message}",
            file=sys.stderr,
        )
        return EXIT_UNREACHABLE
    print(f"error: {exc.code.name}: {exc.message}", file=sys.stderr)
    for field, description in exc.field_violations:
        print(f"  {field}: {description}", file=sys.stderr)
    if exc.reason:
        print(f"  reason: {exc.reason}", file=sys.stderr)
    return EXIT_FAILED


# --- local commands -------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from MODELREG_* variables and the flags given; exit 2 if one is bad."""
    from modelreg.config import ConfigError, Settings

    flags = {"address": None, "home": None, "workers": None} | {
        key: value for key, value in vars(args).items() if key in ("address", "home", "workers")
    }
    try:
        return Settings.from_env(**flags)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _serve(args: argparse.Namespace) -> int:
    from modelreg.server import run

    run(_settings(args))
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from modelreg.app import migrate_main

    applied = migrate_main(_settings(args))
    print("\n".join(f"applied {name}" for name in applied) or "up to date")
    return 0


# --- parser ---------------------------------------------------------------------------------


def _remote_options() -> argparse.ArgumentParser:
    """Options every client command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--target",
        default=os.environ.get("MODELREG_TARGET", DEFAULT_TARGET),
        help="registry address HOST:PORT (env MODELREG_TARGET, default %(default)s)",
    )
    common.add_argument("--json", action="store_true", help="print the proto3 JSON mapping")
    common.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per call (default %(default)s)"
    )
    return common


class _Commands:
    """Adds subcommands to one group, each with the shared client options."""

    def __init__(self, parent: argparse.ArgumentParser, title: str, common: Sequence[Any]) -> None:
        self._group = parent.add_subparsers(dest=title, required=True, metavar="COMMAND")
        self._common = list(common)

    def remote(self, name: str, handler: Handler, summary: str) -> argparse.ArgumentParser:
        """A command that calls the registry through `handler`."""
        parser = self._group.add_parser(
            name, help=summary, description=summary, parents=self._common
        )
        parser.set_defaults(func=lambda args: run_remote(handler, args))
        return parser

    def local(
        self, name: str, func: Callable[[argparse.Namespace], int], summary: str
    ) -> argparse.ArgumentParser:
        """A command that runs in this process."""
        parser = self._group.add_parser(name, help=summary, description=summary)
        parser.set_defaults(func=func)
        return parser

    def group(self, name: str, summary: str) -> _Commands:
        """A nested group of commands (`models create`)."""
        parser = self._group.add_parser(name, help=summary, description=summary)
        return _Commands(parser, f"{name}_command", self._common)


def _add_metadata(parser: argparse.ArgumentParser, *, update: bool = False) -> None:
    """--description, --tag, --label; on updates, only what is given changes."""
    default = None if update else ""
    parser.add_argument("--description", default=default)
    replaces = " (replaces all tags)" if update else ""
    parser.add_argument(
        "--tag",
        action="append",
        default=None if update else [],
        metavar="TAG",
        help=f"repeatable{replaces}",
    )
    parser.add_argument(
        "--label",
        action="append",
        type=key_value,
        metavar="K=V",
        help="repeatable" + (" (replaces all labels)" if update else ""),
    )


def _add_etag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--etag", help="act only if the resource is still at this etag")


def _add_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, metavar="N", help="print at most N")


def _add_guarded(
    group: _Commands, target: tuple[str, str], *commands: tuple[str, Handler, str]
) -> list[argparse.ArgumentParser]:
    """Commands on one resource (`target`: dest and metavar) that take --etag."""
    parsers = []
    for name, handler, summary in commands:
        parser = group.remote(name, handler, summary)
        parser.add_argument(target[0], metavar=target[1])
        _add_etag(parser)
        parsers.append(parser)
    return parsers


def _add_namespaces(commands: _Commands) -> None:
    group = commands.group("namespaces", "create, get and list namespaces")
    create = group.remote("create", _namespaces_create, "create a namespace")
    create.add_argument("namespace", metavar="NS")
    create.add_argument("--description", default="")
    group.remote("get", _namespaces_get, "show a namespace").add_argument("namespace", metavar="NS")
    _add_limit(group.remote("list", _namespaces_list, "list namespaces"))


def _add_models(commands: _Commands) -> None:
    group = commands.group("models", "create, get, list, update and delete models")
    create = group.remote("create", _models_create, "create a model")
    create.add_argument("model", metavar="NS/MODEL")
    _add_metadata(create)
    group.remote("get", _models_get, "show a model").add_argument("model", metavar="NS/MODEL")
    listing = group.remote("list", _models_list, "list the models of a namespace")
    listing.add_argument("namespace", metavar="NS", nargs="?", default="default")
    listing.add_argument("--prefix", default="", help="only model ids starting with this")
    listing.add_argument("--tag", action="append", default=[], help="only models with this tag")
    listing.add_argument("--order-by", default="", help="name, create_time or 'create_time desc'")
    listing.add_argument("--show-deleted", action="store_true")
    _add_limit(listing)
    update, *_ = _add_guarded(
        group,
        ("model", "NS/MODEL"),
        ("update", _models_update, "change a model's metadata"),
        ("delete", _models_delete, "soft-delete a model"),
        ("undelete", _models_undelete, "restore a soft-deleted model"),
    )
    _add_metadata(update, update=True)


def _add_version_metadata(parser: argparse.ArgumentParser, *, update: bool = False) -> None:
    _add_metadata(parser, update=update)
    parser.add_argument("--metric", action="append", type=metric, metavar="K=NUMBER")
    parser.add_argument("--param", action="append", type=key_value, metavar="K=V")


def _add_versions(commands: _Commands) -> None:
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
    _add_limit(listing)
    update, *_ = _add_guarded(
        group,
        ("version", "NS/MODEL:N"),
        ("update", _versions_update, "change a version's metadata"),
        ("archive", _versions_archive, "archive a READY version"),
        ("restore", _versions_restore, "restore an ARCHIVED version"),
    )
    _add_version_metadata(update, update=True)


def _add_alias_target(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("model", metavar="NS/MODEL")
    parser.add_argument("alias", metavar="ALIAS")
    return parser


def _add_aliases(commands: _Commands) -> None:
    group = commands.group("alias", "move, delete, list and roll back aliases")
    set_ = _add_alias_target(group.remote("set", _alias_set, "point an alias at a version"))
    set_.add_argument("number", metavar="N", type=int)
    set_.add_argument("--expect", type=int, metavar="N", help="only if it points at N now (0: new)")
    _add_etag(set_)
    _add_etag(_add_alias_target(group.remote("delete", _alias_delete, "delete an alias")))
    group.remote("list", _alias_list, "list a model's aliases").add_argument("model")
    history = group.remote("history", _alias_history, "list an alias's moves, newest first")
    _add_limit(_add_alias_target(history))
    rollback = group.remote("rollback", _alias_rollback, "move an alias back to where it was")
    _add_etag(_add_alias_target(rollback))


def _add_lookups(commands: _Commands) -> None:
    resolve = commands.remote("resolve", _resolve, "show the version a reference points to")
    resolve.add_argument("reference", metavar="REF", help="ns/model@alias, ns/model:N or ns/model")
    batch = commands.remote("batch-get", _batch_get, "resolve many references at once")
    batch.add_argument("references", metavar="REF", nargs="+")
    for parser in (resolve, batch):
        parser.add_argument("--strong", action="store_true", help="skip the caches")


def _add_local(commands: _Commands) -> None:
    serve = commands.local("serve", _serve, "run the registry server")
    serve.add_argument("--address", help="HOST:PORT to listen on (env MODELREG_ADDRESS)")
    serve.add_argument("--home", help="data directory (env MODELREG_HOME)")
    serve.add_argument("--workers", type=int, help="worker processes")
    migrate = commands.local("migrate", _migrate, "apply pending database migrations")
    migrate.add_argument("--home", help="data directory (env MODELREG_HOME)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = argparse.ArgumentParser(
        prog="modelreg",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = _Commands(parser, "command", [_remote_options()])
    _add_local(commands)
    for add in (_add_namespaces, _add_models, _add_versions, _add_aliases, _add_lookups):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run the `modelreg` command line; exits non-zero on failure (see `--help`)."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except BrokenPipeError:  # `modelreg ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0) from None
    if status:
        raise SystemExit(status)
