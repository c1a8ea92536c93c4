"""Import from an MLflow model registry over its REST API (`modelreg import mlflow`).

MLflow is read through its REST API 2.0 (no MLflow package here: it pins protobuf and
grpcio versions of its own), with MLflow's own credentials variables
(`MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`).
What is copied, for each registered model the `--models` glob matches:

- the model (its id: the name lower-cased, characters outside `[a-z0-9._-]` as `-`; the
  MLflow name in the label `mlflow.name`), its description and tags (as labels);
- every version under its own number, with its creation and last-update times
  (ImportModelVersion), description, tags (as labels), stage (label `mlflow.stage`),
  user (label `mlflow.user_id`), run id and source (`source.run_id`, label
  `mlflow.source`, and lineage: `produced_by` a run of system `mlflow`). A number MLflow
  no longer has (a deleted version) becomes a FAILED placeholder labelled
  `mlflow.deleted=true`, so every later number stays its own; a version whose run was
  deleted is copied like any other;
- aliases, set last (only at READY versions: the registry's rule);
- with `with_artifacts`, each READY version's files, downloaded through MLflow's artifact
  API (`mlflow-artifacts:` URIs, what `mlflow server` serves by default) and pushed
  content-addressed, verified by SHA-256 on arrival; the version is imported PENDING and
  becomes READY when its files are finalized (its update time is then the import's).

The import is idempotent and resumable: each step first reads what the registry has (the
model, its versions by number, its aliases), so a second run writes nothing and a run cut
midway finishes on rerun (a PENDING version that should be READY gets its files again,
and bytes the registry holds are not sent twice). `plan` lists what would change
(`--dry-run`) without writing.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelreg.client import lineage as lineage_calls
from modelreg.client.blocking import Client
from modelreg.client.errors import AlreadyExistsError, NotFoundError
from modelreg.v1 import resources_pb2 as res

_ID_CHARS = re.compile(r"[^a-z0-9._-]+")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,127}")
_ALIAS = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
MAX_VALUE = 1024
_STATES = {
    "READY": res.MODEL_VERSION_STATE_READY,
    "PENDING_REGISTRATION": res.MODEL_VERSION_STATE_PENDING,
    "FAILED_REGISTRATION": res.MODEL_VERSION_STATE_FAILED,
}
_PAGE = 1000


class MlflowError(RuntimeError):
    """MLflow could not be read; the message names what to change."""


class MlflowRest:
    """The few REST calls the import makes, with MLflow's credentials variables."""

    def __init__(self, tracking_uri: str, *, timeout: float = 60.0) -> None:
        if not tracking_uri.startswith(("http://", "https://")):
            raise MlflowError(
                f"--tracking-uri must be an MLflow tracking server's http(s) URL, not"
                f" {tracking_uri!r} (start one with `mlflow server`)"
            )
        self.base = tracking_uri.rstrip("/")
        self.timeout = timeout
        self._headers = {"User-Agent": "modelreg-import"}
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        elif user:
            pair = f"{user}:{os.environ.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()

    def get(self, endpoint: str, **query: Any) -> dict[str, Any]:
        """GET /api/2.0/<endpoint> with a query string; the JSON answer."""
        given = {k: v for k, v in query.items() if v not in (None, "")}
        url = f"{self.base}/api/2.0/{endpoint}?{urllib.parse.urlencode(given)}"
        with self._open(url) as answer:
            body: dict[str, Any] = json.loads(answer.read() or b"{}")
            return body

    def download(self, artifact_path: str, to: Path) -> int:
        """Stream one proxied artifact to a file; its size."""
        quoted = urllib.parse.quote(artifact_path)
        with self._open(f"{self.base}/api/2.0/mlflow-artifacts/artifacts/{quoted}") as answer:
            to.parent.mkdir(parents=True, exist_ok=True)
            with to.open("wb") as out:
                shutil.copyfileobj(answer, out, 1 << 20)
        return to.stat().st_size

    def _open(self, url: str) -> Any:
        request = urllib.request.Request(url, headers=self._headers)  # http(s): __init__
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            if exc.code in (401, 403):
                raise MlflowError(
                    f"MLflow refused {url} ({exc.code}): set MLFLOW_TRACKING_TOKEN, or"
                    " MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
                ) from None
            raise MlflowError(f"MLflow answered {exc.code} to {url}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise MlflowError(
                f"no MLflow tracking server answered at {self.base} ({exc}); check --tracking-uri"
            ) from None

    def pages(self, endpoint: str, key: str, **query: Any) -> Iterator[dict[str, Any]]:
        """Every item of a paged search."""
        token = ""
        while True:
            body = self.get(endpoint, max_results=_PAGE, page_token=token, **query)
            yield from body.get(key, [])
            token = body.get("next_page_token", "")
            if not token:
                return


@dataclass
class MlflowVersion:
    number: int
    body: dict[str, Any]


@dataclass
class ModelPlan:
    """What the import does for one MLflow model."""

    mlflow_name: str
    model: str  # ns/model
    create: bool
    versions: list[res.ModelVersion]  # to import, in number order (placeholders included)
    files_for: list[int]  # numbers whose files are still to push (PENDING, READY in MLflow)
    lineage: dict[int, tuple[str, str]]  # number -> (run id, source)
    aliases: dict[str, int]  # alias -> number, to set
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    download_uris: dict[int, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # what could not be carried, and why


@dataclass
class Outcome:
    """What a run did (or, dry, would do)."""

    models_created: int = 0
    versions_imported: int = 0
    placeholders: int = 0
    files_pushed: int = 0
    bytes_downloaded: int = 0
    aliases_set: int = 0
    lineage_added: int = 0
    dropped: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return (self.models_created + self.versions_imported + self.files_pushed
                + self.aliases_set + self.lineage_added)  # fmt: skip


def model_id_of(name: str) -> str:
    """The registry id an MLflow model name becomes."""
    slug = _ID_CHARS.sub("-", name.lower()).strip("-._")[:63]
    return slug or "model"


def plan(
    mlflow: MlflowRest, client: Client, *, namespace: str, models: str = "*",
    with_artifacts: bool = False,
) -> list[ModelPlan]:  # fmt: skip
    """What importing the matching models would change in `namespace` now."""
    plans: list[ModelPlan] = []
    taken: dict[str, str] = {}
    for body in mlflow.pages("mlflow/registered-models/search", "registered_models"):
        name = body["name"]
        if not fnmatch.fnmatchcase(name, models):
            continue
        model_id = model_id_of(name)
        if model_id in taken:
            raise MlflowError(
                f"MLflow models {taken[model_id]!r} and {name!r} would both be {model_id!r}:"
                " import them in separate runs (--models) into different namespaces"
            )
        taken[model_id] = name
        plans.append(_plan_model(mlflow, client, body, f"{namespace}/{model_id}", with_artifacts))
    return plans


def _plan_model(
    mlflow: MlflowRest, client: Client, body: dict[str, Any], model: str, with_artifacts: bool
) -> ModelPlan:
    name = body["name"]
    dropped: list[str] = []
    labels = _labels(body.get("tags", []), f"model {name}", dropped)
    labels["mlflow.name"] = name[:MAX_VALUE]
    try:
        client.get_model(model, strong=True)
        exists = True
    except NotFoundError:
        exists = False
    have = {v.number: v for v in client.list_versions(model, order_by="number")} if exists else {}
    versions = sorted(
        (MlflowVersion(int(v["version"]), v) for v in _versions_of(mlflow, name)),
        key=lambda v: v.number,
    )
    wanted: list[res.ModelVersion] = []
    files_for: list[int] = []
    lineage: dict[int, tuple[str, str]] = {}
    by_number = {v.number: v for v in versions}
    last = max(by_number, default=0)
    previous_time = 0
    for number in range(1, last + 1):
        found = by_number.get(number)
        if found is None:
            proto = _placeholder(number, previous_time or _ms(body.get("creation_timestamp")))
        else:
            proto = _version_of(found, with_artifacts, f"{name} v{number}", dropped)
            previous_time = _ms(found.body.get("creation_timestamp"))
            if found.body.get("run_id"):
                lineage[number] = (found.body["run_id"], found.body.get("source", ""))
            current = have.get(number)
            unfinished = current is None or current.state == res.MODEL_VERSION_STATE_PENDING
            if with_artifacts and found.body.get("status") == "READY" and unfinished:
                files_for.append(number)
        if number not in have:
            wanted.append(proto)
    pointing = {a.name.rsplit("/", 1)[-1]: a.version_number
               for a in client.list_aliases(model)} if exists else {}  # fmt: skip
    aliases = _aliases(body, by_number, pointing, dropped)
    return ModelPlan(name, model, not exists, wanted, files_for, lineage, aliases,
                     body.get("description", ""), labels, dropped=dropped)  # fmt: skip


def _versions_of(mlflow: MlflowRest, name: str) -> Iterator[dict[str, Any]]:
    quote = "'" if "'" not in name else '"'
    if quote in name:
        raise MlflowError(f"MLflow model {name!r} has both quote characters: no filter names it")
    return mlflow.pages("mlflow/model-versions/search", "model_versions",
                        filter=f"name={quote}{name}{quote}")  # fmt: skip


def _version_of(
    found: MlflowVersion, with_artifacts: bool, where: str, dropped: list[str]
) -> res.ModelVersion:
    body = found.body
    state = _STATES.get(body.get("status", "READY"), res.MODEL_VERSION_STATE_READY)
    if with_artifacts and state == res.MODEL_VERSION_STATE_READY:
        state = res.MODEL_VERSION_STATE_PENDING  # READY once its files are in
    labels = _labels(body.get("tags", []), where, dropped)
    extra = {"mlflow.stage": body.get("current_stage") or "", "mlflow.user_id":
             body.get("user_id") or "", "mlflow.source": body.get("source") or ""}  # fmt: skip
    for key, value in extra.items():
        if value and value != "None":
            labels[key] = value[:MAX_VALUE]
    version = res.ModelVersion(
        number=found.number, state=state, description=(body.get("description") or "")[:4096],
        labels=labels, source=res.VersionSource(run_id=(body.get("run_id") or "")[:256]),
    )  # fmt: skip
    version.create_time.CopyFrom(_stamp(_ms(body.get("creation_timestamp"))))
    updated = _ms(body.get("last_updated_timestamp")) or _ms(body.get("creation_timestamp"))
    version.update_time.CopyFrom(_stamp(updated))
    return version


def _placeholder(number: int, millis: int) -> res.ModelVersion:
    version = res.ModelVersion(
        number=number, state=res.MODEL_VERSION_STATE_FAILED,
        description="deleted in MLflow before the import: kept so later numbers stay theirs",
        labels={"mlflow.deleted": "true"},
    )  # fmt: skip
    version.create_time.CopyFrom(_stamp(millis))
    return version


def _aliases(
    body: dict[str, Any],
    by_number: dict[int, MlflowVersion],
    current: dict[str, int],
    dropped: list[str],
) -> dict[str, int]:
    """The aliases to set: MLflow's, where the registry's differ (and can hold them)."""
    todo: dict[str, int] = {}
    for entry in body.get("aliases", []):
        alias, number = entry["alias"], int(entry["version"])
        if not _ALIAS.fullmatch(alias) or alias.isdigit() or alias == "latest":
            dropped.append(f"alias {alias!r} of {body['name']}: not a registry alias name")
            continue
        target = by_number.get(number)
        if target is None or target.body.get("status") != "READY":
            dropped.append(f"alias {alias!r} of {body['name']}: version {number} is not READY")
            continue
        if current.get(alias) != number:
            todo[alias] = number
    return todo


def _labels(tags: list[dict[str, str]], where: str, dropped: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for tag in tags:
        key, value = tag.get("key", ""), tag.get("value", "") or ""
        if not _KEY.fullmatch(key):
            dropped.append(f"{where}: tag {key[:60]!r} is not a label key ([A-Za-z0-9_.:/-])")
        elif len(value) > MAX_VALUE:
            dropped.append(f"{where}: tag {key!r} is longer than {MAX_VALUE} characters")
        else:
            labels[key] = value
    return labels


def _ms(value: Any) -> int:
    return int(value or 0)


def _stamp(millis: int) -> Any:
    from google.protobuf import timestamp_pb2

    stamp = timestamp_pb2.Timestamp()
    stamp.FromMilliseconds(millis)
    return stamp


def apply(
    mlflow: MlflowRest, client: Client, plans: list[ModelPlan], *,
    progress: Callable[[str, int, int], None] | None = None,
) -> Outcome:  # fmt: skip
    """Carry out the plans, model by model; safe to run again after a cut."""
    outcome = Outcome()
    steps = _Steps(sum(len(p.versions) + len(p.files_for) for p in plans), progress)
    for p in plans:
        outcome.dropped += p.dropped
        if p.create:
            try:
                client.create_model(p.model, description=p.description, labels=p.labels)
                outcome.models_created += 1
            except AlreadyExistsError:
                pass  # a concurrent or cut run made it
        _versions(client, p, outcome, steps)
        for number, (run_id, source) in p.lineage.items():
            run = lineage_calls.run("mlflow", run_id, uri=source[:1024])
            added = client.add_lineage(f"{p.model}:{number}", [("produced_by", run)])
            outcome.lineage_added += len(added)
        for number in p.files_for:
            pushed, size = _files(mlflow, client, p, number)
            outcome.files_pushed += pushed
            outcome.bytes_downloaded += size
            steps.step()
        for alias, number in p.aliases.items():
            client.set_alias(p.model, alias, number)
            outcome.aliases_set += 1
    return outcome


class _Steps:
    def __init__(self, total: int, progress: Callable[[str, int, int], None] | None) -> None:
        self.total, self.done, self.progress = max(total, 1), 0, progress

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress("import", self.done, self.total)


def _versions(client: Client, p: ModelPlan, outcome: Outcome, steps: _Steps) -> None:
    for version in p.versions:
        try:
            client.import_version(p.model, version)
        except AlreadyExistsError:
            pass  # imported by a run cut before it could note it
        else:
            outcome.versions_imported += 1
            outcome.placeholders += version.labels.get("mlflow.deleted") == "true"
        steps.step()


def _files(mlflow: MlflowRest, client: Client, p: ModelPlan, number: int) -> tuple[int, int]:
    """Download one version's files from MLflow and push them; (files, bytes)."""
    name = p.mlflow_name
    uri = mlflow.get("mlflow/model-versions/get-download-uri", name=name,
                     version=str(number))["artifact_uri"]  # fmt: skip
    root = _proxied_path(_resolved(mlflow, uri), name, number)
    with tempfile.TemporaryDirectory(prefix="modelreg-mlflow-") as tmp:
        size = 0
        files = list(_listing(mlflow, root))
        for relative in files:
            size += mlflow.download(f"{root}/{relative}", Path(tmp) / relative)
        if not files:
            raise MlflowError(f"MLflow lists no files under {uri} for {name} version {number}")
        client.push(f"{p.model}:{number}", tmp)
    return len(files), size


def _resolved(mlflow: MlflowRest, uri: str) -> str:
    """A `runs:/RUN/path` or `models:/m-ID` source as the artifact URI it stands for
    (a deleted run still answers)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "runs":
        run_id, _, path = parsed.path.strip("/").partition("/")
        base = mlflow.get("mlflow/runs/get", run_id=run_id)["run"]["info"]["artifact_uri"]
        return f"{base.rstrip('/')}/{path}".rstrip("/")
    if parsed.scheme == "models" and parsed.path.strip("/").startswith("m-"):
        model_id = parsed.path.strip("/").split("/")[0]
        body = mlflow.get(f"mlflow/logged-models/{urllib.parse.quote(model_id)}")
        return str(body["model"]["info"]["artifact_uri"])
    return uri


def _proxied_path(uri: str, name: str, number: int) -> str:
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "mlflow-artifacts":
        raise MlflowError(
            f"{name} version {number} keeps its files at {uri}: the import downloads through"
            " MLflow's artifact proxy only (`mlflow server` with --serve-artifacts, the default,"
            " gives mlflow-artifacts: URIs); copy these files with `modelreg push` instead"
        )
    return parsed.path.strip("/")


def _listing(mlflow: MlflowRest, root: str, below: str = "") -> Iterator[str]:
    path = f"{root}/{below}".rstrip("/")
    for entry in mlflow.get("mlflow-artifacts/artifacts", path=path).get("files", []):
        relative = f"{below}/{entry['path'].rsplit('/', 1)[-1]}".lstrip("/")
        if entry.get("is_dir"):
            yield from _listing(mlflow, root, relative)
        else:
            yield relative


def describe(plans: list[ModelPlan]) -> list[str]:
    """What a plan would change, one line each (`--dry-run`)."""
    lines = []
    for p in plans:
        if p.create:
            lines.append(f"create model {p.model} (MLflow {p.mlflow_name!r})")
        if p.versions:
            holes = sum(v.labels.get("mlflow.deleted") == "true" for v in p.versions)
            numbers = f"{p.versions[0].number}-{p.versions[-1].number}"
            lines.append(f"import {len(p.versions)} versions of {p.model} ({numbers}"
                         + (f", {holes} deleted in MLflow as FAILED placeholders" if holes else "")
                         + ")")  # fmt: skip
        if p.files_for:
            lines.append(f"copy the files of {len(p.files_for)} versions of {p.model}")
        for alias, number in p.aliases.items():
            lines.append(f"set {p.model}@{alias} -> {number}")
    return lines
