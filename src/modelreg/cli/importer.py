"""`modelreg import mlflow`: copy an MLflow model registry (client/mlflow.py says what,
and how a cut run finishes on rerun)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from google.protobuf import struct_pb2

from modelreg.cli.commands import EXIT_PARTIAL, Commands
from modelreg.cli.output import Output, Summary
from modelreg.cli.progress import progress_bar
from modelreg.client import Client
from modelreg.client.mlflow import MlflowError, MlflowRest, apply, describe, plan


def _mlflow(client: Client, args: argparse.Namespace) -> Output:
    try:
        mlflow = MlflowRest(args.tracking_uri, timeout=args.mlflow_timeout)
        plans = plan(mlflow, client, namespace=args.namespace, models=args.models,
                     with_artifacts=args.with_artifacts)  # fmt: skip
        dropped = [line for p in plans for line in p.dropped]
        if args.dry_run:
            lines = describe(plans) or ["nothing to copy: the registry has all of it"]
            message = struct_pb2.Struct()
            message.update({"changes": lines, "dropped": dropped})
            return Summary(message, "\n".join(lines), notes=_notes(dropped),
                           exit_code=EXIT_PARTIAL if dropped else 0)  # fmt: skip
        with progress_bar(args.json, units=lambda n: f"{n:.0f}") as bar:
            outcome = apply(mlflow, client, plans, progress=bar)
    except MlflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    text = (
        f"{len(plans)} MLflow models: {outcome.models_created} models created,"
        f" {outcome.versions_imported} versions imported ({outcome.placeholders} placeholders"
        f" of deleted versions), {outcome.files_pushed} files"
        f" ({outcome.bytes_downloaded:,} bytes), {outcome.aliases_set} aliases set,"
        f" {outcome.lineage_added} lineage edges"
    )
    if not outcome.changed:
        text += "\nnothing copied: the registry already has all of it"
    message = struct_pb2.Struct()
    message.update({k: v for k, v in asdict(outcome).items()})
    return Summary(message, text, notes=_notes(dropped), exit_code=EXIT_PARTIAL if dropped else 0)


def _notes(dropped: list[str]) -> list[str]:
    return [f"not copied: {line}" for line in dropped]


def add_import(commands: Commands) -> None:
    group = commands.group("import", "copy models from another registry")
    mlflow = group.remote(
        "mlflow", _mlflow, "copy an MLflow registry: models, versions with their numbers and"
        " times, tags, aliases, runs as lineage, and (--with-artifacts) the files; run it"
        " again to finish a cut run (it copies nothing twice)",
    )  # fmt: skip
    mlflow.add_argument(
        "--tracking-uri",
        required=True,
        metavar="URL",
        help="the MLflow tracking server, e.g. http://mlflow:5000 (credentials"
        ": MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME/_PASSWORD)",
    )
    mlflow.add_argument("--namespace", default="default", help="where to (default: %(default)s)")
    mlflow.add_argument("--models", default="*", metavar="GLOB",
                        help="MLflow model names to copy (default: all)")  # fmt: skip
    mlflow.add_argument("--with-artifacts", action="store_true",
                        help="also copy each READY version's files (SHA-256 verified)")  # fmt: skip
    mlflow.add_argument("--dry-run", action="store_true", help="print what would change")
    mlflow.add_argument("--mlflow-timeout", type=float, default=60.0, metavar="S",
                        help="seconds per MLflow request (default: %(default)s)")  # fmt: skip
