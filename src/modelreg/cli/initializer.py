"""`modelreg-storage-initializer`: a KServe custom storage initializer for `modelreg://` URIs.

KServe runs the container that a ClusterStorageContainer names (deploy/kserve/) as the
pod's `storage-initializer` init container with the arguments `SRC_URI DEST_DIR` (one
pair more per extra storage URI), and the model server reads DEST_DIR once it exits 0.

    modelreg://ns/model@production   the version the alias names now
    modelreg://ns/model@7            version 7 (also modelreg://ns/model:7)
    modelreg://ns/model@latest       the latest READY version (also modelreg://ns/model)

Each URI is resolved once (consistency STRONG) to a pinned version, whose files are
pulled into DEST_DIR, every one verified against its sha256 (a cut download resumes when
the container is restarted). The pinned version (`namespaces/ns/models/model/versions/7
sha256:<digest>`) is printed on stdout, one line per URI, for the pod's log. The
registry is MODELREG_TARGET (HOST:PORT, default 127.0.0.1:50051); MODELREG_ACTOR names
the caller.

Exit status: 0 every URI written; 1 the registry refused (not found, not READY, a digest
mismatch) or a file could not be written; 2 bad arguments or URI; 3 no registry answered.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from modelreg.cli.commands import DEFAULT_TARGET, EXIT_FAILED, EXIT_USAGE, report
from modelreg.client import AsyncClient, InvalidArgumentError, RegistryError
from modelreg.client.errors import checked_locally
from modelreg.domain import names
from modelreg.domain.errors import InvalidArgument
from modelreg.v1 import resources_pb2 as res

SCHEME = "modelreg://"
USAGE = "usage: modelreg-storage-initializer SRC_URI DEST_DIR [SRC_URI DEST_DIR ...]"


def reference_of(uri: str) -> str:
    """The registry reference a `modelreg://` URI names (`@N` is version N); raises
    InvalidArgumentError for anything else."""
    body = uri.removeprefix(SCHEME).rstrip("/") if uri.startswith(SCHEME) else ""
    model, at, alias = body.partition("@")
    reference = f"{model}:{alias}" if at and alias.isdigit() else body
    with checked_locally():
        if not body or "?" in body or "#" in body:
            raise InvalidArgument.field(
                "uri", f"{uri!r} is not a modelreg://ns/model@alias, @N or @latest URI"
            )
        names.parse_reference(reference, "uri")
    return reference


async def initialize(client: AsyncClient, uri: str, dest: Path) -> res.ModelVersion:
    """Resolve `uri` to a pinned version and pull its verified files into `dest`."""
    version = await client.resolve(reference_of(uri), strong=True)
    await client.pull(version.name, dest)
    return version


async def _run(target: str, pairs: list[tuple[str, Path]]) -> None:
    async with AsyncClient(target) as client:
        for uri, dest in pairs:
            version = await initialize(client, uri, dest)
            print(f"{version.name} {version.digest}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the initializer; exits non-zero on failure (see the module's docstring)."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]):
        print(f"{USAGE}\n\n{__doc__}")
        raise SystemExit(0)
    if not args or len(args) % 2:
        print(USAGE, file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    pairs = [(args[i], Path(args[i + 1])) for i in range(0, len(args), 2)]
    target = os.environ.get("MODELREG_TARGET", DEFAULT_TARGET)
    try:
        for uri, _ in pairs:
            reference_of(uri)  # every URI checked before any byte moves
    except InvalidArgumentError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    try:
        asyncio.run(_run(target, pairs))
    except RegistryError as exc:
        raise SystemExit(report(exc, target)) from None
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None
