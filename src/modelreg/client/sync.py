"""`Syncer`: keep `DIR/current` pointing at the files of the version a reference resolves to.

    DIR/current -> versions/7              a relative symlink, swapped atomically
    DIR/versions/7/...                     one directory per version, complete and verified
    DIR/versions/6/...                     the previous one, kept for an instant rollback
    DIR/.modelreg-sync/state.json          the reference and the versions activated, in order
    DIR/.modelreg-sync/manifests/7.json    each kept version's manifest (path, size, sha256)
    DIR/.modelreg-sync/staging/8/          a pull in progress (resumed by the next attempt)
    DIR/.modelreg-sync/lock                flock: one syncer per DIR

A version is pulled (every file verified against its sha256, resumable) into its staging
directory; files whose digest an earlier version already holds are hard-linked from it
(copied across filesystems) first, so only new bytes move, and still re-hashed by the
pull. The complete directory is renamed into `versions/`, then `current` is replaced by a
symlink made under a temporary name (`os.replace`): a reader that opens `current` sees
the old version or the new one, whole, never a mix or a half-written file.

The hook runs after the swap, so it can load what `current` names (e.g. Triton's model
load API reading the repository): `/bin/sh -c CMD modelreg-sync NEW_PATH`, so `$1` is
the new version's directory, with `MODELREG_SYNC_PATH`, `MODELREG_SYNC_VERSION`
(resource name), `MODELREG_SYNC_NUMBER`, `MODELREG_SYNC_DIGEST`,
`MODELREG_SYNC_REFERENCE` and `MODELREG_SYNC_PREVIOUS` (the directory `current` named
before, empty on the first sync) in its environment. If it fails (non-zero exit),
`current` is swapped back to where it was (removed if there was none) and `HookFailed`
is raised; the pulled directory stays, so a later attempt needs no download. A failed
pull never touches `current`.

A sync to the version `current` already names does nothing (no pull, no hook), so a
restarted `modelreg sync` is quiet; a version whose directory is still kept (a rollback)
is swapped in without a pull (it was verified when it was pulled). Files are shared
between versions by hard links: treat them as read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from modelreg.client.errors import RegistryError, checked_locally
from modelreg.client.files import part_path, safe_destination
from modelreg.domain import names
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import resources_pb2 as res

if TYPE_CHECKING:
    from modelreg.client.aio import AsyncClient

log = logging.getLogger(__name__)

META = ".modelreg-sync"
DEFAULT_KEEP = 2  # the current version and the previous one


class SyncError(Exception):
    """A sync that could not complete; `current` was left where it was."""


class HookFailed(SyncError):
    """The hook exited non-zero (or could not start); `current` was swapped back."""

    def __init__(self, message: str, returncode: int) -> None:
        super().__init__(message)
        self.returncode = returncode


class Puller(Protocol):
    """What a Syncer needs of an AsyncClient."""

    async def list_manifest(self, reference: str) -> art.ListManifestResponse: ...

    async def pull(self, reference: str, dest: str | os.PathLike[str]) -> Any: ...


@dataclass(frozen=True, slots=True)
class Synced:
    """What one sync did: the version now current, its directory, and the one before."""

    version: str
    number: int
    path: Path
    previous: Path | None
    pulled: bool  # False when the version's directory was already there (a rollback)
    reused_files: int  # files linked from earlier versions instead of downloaded


class Syncer:
    """Pulls versions of one model into `root` and points `root/current` at one of them.
    Use as a context manager: it holds `root`'s lock while open."""

    def __init__(
        self,
        client: Puller,
        reference: str,
        root: str | os.PathLike[str],
        *,
        hook: str | None = None,
        keep: int = DEFAULT_KEEP,
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1 (the current version)")
        self._client = client
        self.reference = reference
        self.root = Path(os.path.abspath(root))
        self._meta = self.root / META
        self._hook = hook
        self._keep = keep
        self._lock: IO[bytes] | None = None

    def __enter__(self) -> Syncer:
        for folder in (self.root / "versions", self._meta / "manifests", self._meta / "staging"):
            folder.mkdir(parents=True, exist_ok=True)
        lock = (self._meta / "lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise SyncError(f"another sync is running on {self.root}") from None
        self._lock = lock
        try:
            self._check_reference()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    @property
    def current(self) -> Path | None:
        """The version directory `current` points at, if any."""
        try:
            target = os.readlink(self.root / "current")
        except FileNotFoundError:
            return None
        return Path(os.path.normpath(self.root / target))

    async def sync(self, version: res.ModelVersion) -> Synced:
        """Make `version` current: pull it unless it is already here, swap, run the hook,
        prune. Raises SyncError (HookFailed) or the pull's error, leaving `current`."""
        number = int(version.name.rsplit("/", 1)[1])
        final = self.root / "versions" / str(number)
        pulled, reused = False, 0
        if not (final.is_dir() and self._manifest_path(number).is_file()):
            reused = await self._pull(version.name, number, final)
            pulled = True
        previous = self.current
        if previous == final:
            return Synced(version.name, number, final, previous, pulled, reused)
        self._point_current_at(final)
        try:
            await self._run_hook(version, final, previous)
        except HookFailed:
            self._point_current_at(previous)
            raise
        self._record(number)
        await asyncio.to_thread(self._prune)
        return Synced(version.name, number, final, previous, pulled, reused)

    async def _pull(self, version: str, number: int, final: Path) -> int:
        manifest = await self._client.list_manifest(version)
        staging = self._meta / "staging" / str(number)
        reused = await asyncio.to_thread(self._link_known_files, manifest, staging)
        await self._client.pull(version, staging)  # verifies every file, linked ones too
        await asyncio.to_thread(self._publish, manifest, number, staging, final)
        return reused

    def _link_known_files(self, manifest: art.ListManifestResponse, staging: Path) -> int:
        """Hard-link (or copy) into `staging` every file whose sha256 a kept version holds."""
        known = self._known_files()
        linked = 0
        for file in manifest.files:
            source = known.get(file.sha256)
            target = safe_destination(staging, file.path) if source else None
            if source is None or target is None or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            part_path(target).unlink(missing_ok=True)  # a cut download of it: not needed now
            try:
                os.link(source, target)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
                shutil.copyfile(source, target)
            linked += 1
        return linked

    def _known_files(self) -> dict[str, Path]:
        """sha256 -> a file holding those bytes, over the kept versions."""
        known: dict[str, Path] = {}
        for path in sorted((self._meta / "manifests").glob("*.json")):
            number = path.stem
            recorded = json.loads(path.read_text())
            for file in recorded["files"]:
                source = self.root / "versions" / number / file["path"]
                if source.is_file():
                    known.setdefault(file["sha256"], source)
        return known

    def _publish(
        self, manifest: art.ListManifestResponse, number: int, staging: Path, final: Path
    ) -> None:
        """Record the manifest, then move the complete directory into `versions/`."""
        recorded = {
            "version": manifest.version,
            "digest": manifest.digest,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in manifest.files],
        }
        _write_atomically(self._manifest_path(number), json.dumps(recorded, indent=1))
        if final.exists():  # a directory without its manifest: a publish cut short
            shutil.rmtree(final)
        staging.mkdir(parents=True, exist_ok=True)  # a version without files
        os.replace(staging, final)
        _fsync_dir(final.parent)

    def _point_current_at(self, target: Path | None) -> None:
        """Swap `current` atomically: a symlink under a temporary name, renamed over it."""
        link = self.root / "current"
        if target is None:
            link.unlink(missing_ok=True)
        else:
            temporary = self.root / f".current.{uuid.uuid4().hex}"
            os.symlink(os.path.relpath(target, self.root), temporary)
            os.replace(temporary, link)
        _fsync_dir(self.root)

    async def _run_hook(self, version: res.ModelVersion, path: Path, previous: Path | None) -> None:
        if not self._hook:
            return
        env = os.environ | {
            "MODELREG_SYNC_PATH": str(path),
            "MODELREG_SYNC_VERSION": version.name,
            "MODELREG_SYNC_NUMBER": str(version.number),
            "MODELREG_SYNC_DIGEST": version.digest,
            "MODELREG_SYNC_REFERENCE": self.reference,
            "MODELREG_SYNC_PREVIOUS": str(previous or ""),
        }
        args = ("-c", self._hook, "modelreg-sync", str(path))
        try:
            proc = await asyncio.create_subprocess_exec("/bin/sh", *args, env=env)
        except OSError as exc:
            raise HookFailed(f"the hook could not start: {exc}", -1) from exc
        code = await proc.wait()
        if code != 0:
            raise HookFailed(
                f"the hook exited {code} for {version.name}; {self.root / 'current'} is back"
                f" at {previous or 'nothing'}",
                code,
            )

    def _manifest_path(self, number: int) -> Path:
        return self._meta / "manifests" / f"{number}.json"

    def _state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self._meta / "state.json").read_text())
        except FileNotFoundError:
            return {"reference": self.reference, "activated": []}
        return state

    def _check_reference(self) -> None:
        """One DIR follows one model: its version numbers name its directories."""
        recorded = self._state()["reference"]
        if _model_of(recorded) != _model_of(self.reference):
            raise SyncError(
                f"{self.root} holds versions of {recorded!r}; sync {self.reference!r}"
                " into another directory"
            )

    def _record(self, number: int) -> None:
        state = self._state()
        activated = [n for n in state["activated"] if n != number] + [number]
        state |= {"reference": self.reference, "activated": activated}
        _write_atomically(self._meta / "state.json", json.dumps(state))

    def _prune(self) -> None:
        """Delete every version directory but the `keep` most recently activated, and
        every staging directory (a later pull starts again)."""
        kept = {str(n) for n in self._state()["activated"][-self._keep :]}
        for folder in (self.root / "versions").iterdir():
            if folder.name.isdigit() and folder.name not in kept:
                self._manifest_path(int(folder.name)).unlink(missing_ok=True)
                shutil.rmtree(folder, ignore_errors=True)
        for folder in (self._meta / "staging").iterdir():
            shutil.rmtree(folder, ignore_errors=True)
        for stale in self.root.glob(".current.*"):  # a swap cut short by a crash
            stale.unlink(missing_ok=True)


Report = Callable[["Synced | BaseException"], None]
RETRY_AFTER_PULL_FAILURE = (1.0, 30.0)  # seconds, first and longest, doubling


async def follow(client: AsyncClient, syncer: Syncer, *, report: Report) -> None:
    """Keep `syncer` on whatever its reference resolves to, until cancelled: a live cache
    (Watch, not polling) wakes it on each move; moves during a sync coalesce into one.
    `report` gets each Synced, and each failure (after which `current` stays where it
    was). A failed pull is tried again with backoff; a failed hook waits for the next
    move."""
    async with client.live(references=[syncer.reference]) as live:
        moved = asyncio.Event()
        live.on_change(lambda reference, old, new: moved.set())
        pause = RETRY_AFTER_PULL_FAILURE[0]
        while True:
            retry: float | None = None
            try:
                report(await syncer.sync(live.resolve(syncer.reference)))
                pause = RETRY_AFTER_PULL_FAILURE[0]
            except HookFailed as failed:
                report(failed)
            except (RegistryError, SyncError, OSError) as failed:  # the pull, or no version
                report(failed)
                retry, pause = pause, min(pause * 2, RETRY_AFTER_PULL_FAILURE[1])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(retry):
                    await moved.wait()
            moved.clear()


def _model_of(reference: str) -> str:
    with checked_locally():
        return names.parse_reference(reference).model.name


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with temporary.open("w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
