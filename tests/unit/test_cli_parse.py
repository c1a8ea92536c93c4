"""The command line: parsing, the table and field printers, and errors, without a server."""

from __future__ import annotations

import io
import json

import pytest
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2, status_pb2

from modelreg import cli
from modelreg.cli import output, progress
from modelreg.client import Pushed
from modelreg.client.artifacts import LocalFile
from modelreg.client.push import manifest_digest
from modelreg.config import Settings
from modelreg.domain.artifacts import manifest_digest as server_manifest_digest
from modelreg.domain.types import VersionFile
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as res
from tests.helpers import free_port

_TIME = timestamp_pb2.Timestamp(seconds=1_800_000_000)  # 2027-01-15 08:00:00Z


def _parse(*argv: str) -> dict[str, object]:
    return vars(cli.build_parser().parse_args(argv))


def _version(number: int, state: res.ModelVersionState.ValueType) -> res.ModelVersion:
    return res.ModelVersion(
        name=f"namespaces/t/models/m/versions/{number}",
        number=number,
        state=state,
        digest="sha256:" + "ab" * 32,
        create_time=_TIME,
    )


def test_models_create_collects_tags_and_labels() -> None:
    args = _parse("models", "create", "t/m", "--tag", "a", "--tag", "b", "--label", "k=v=w")
    assert (args["model"], args["tag"], args["label"]) == ("t/m", ["a", "b"], [("k", "v=w")])
    assert args["description"] == ""


def test_updates_leave_unnamed_fields_unset() -> None:
    args = _parse("models", "update", "t/m", "--description", "new", "--etag", "e1")
    assert (args["description"], args["tag"], args["label"]) == ("new", None, None)
    assert args["etag"] == "e1"


def test_versions_create_options() -> None:
    args = _parse(
        "versions", "create", "t/m", "--ready", "--metric", "auc=0.91", "--param", "lr=0.1",
        "--run-id", "r7", "--framework", "torch",
    )  # fmt: skip
    assert args["ready"] is True
    assert args["metric"] == [("auc", 0.91)]
    assert args["param"] == [("lr", "0.1")]
    assert (args["run_id"], args["framework"], args["code_commit"]) == ("r7", "torch", None)


def test_versions_list_options() -> None:
    args = _parse(
        "versions", "list", "t/m", "--state", "ready", "--state", "archived", "--oldest-first",
        "--limit", "5",
    )  # fmt: skip
    assert (args["state"], args["oldest_first"], args["limit"]) == (["ready", "archived"], True, 5)


def test_alias_set_and_common_options() -> None:
    args = _parse(
        "alias", "set", "t/m", "prod", "3", "--expect", "0", "--json", "--timeout", "2.5",
        "--target", "h:1",
    )  # fmt: skip
    assert (args["model"], args["alias"], args["number"], args["expect"]) == ("t/m", "prod", 3, 0)
    assert (args["json"], args["timeout"], args["target"]) == (True, 2.5, "h:1")


def test_target_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELREG_TARGET", "registry:9")
    assert _parse("resolve", "t/m@prod")["target"] == "registry:9"
    monkeypatch.delenv("MODELREG_TARGET")
    assert _parse("resolve", "t/m@prod")["target"] == cli.DEFAULT_TARGET


def test_models_list_defaults_to_the_default_namespace() -> None:
    args = _parse("models", "list")
    assert (args["namespace"], args["tag"], args["show_deleted"]) == ("default", [], False)


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["models", "create", "t/m", "--label", "novalue"], "key=value"),
        (["versions", "create", "t/m", "--metric", "auc=high"], "needs a number"),
        (["versions", "list", "t/m", "--state", "done"], "invalid choice"),
        (["alias", "set", "t/m", "prod", "three"], "invalid int"),
        (["models"], "required"),
        ([], "required"),
    ],
)
def test_bad_command_lines_exit_2(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == cli.EXIT_USAGE
    assert complaint in capsys.readouterr().err


def test_help_documents_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "exit status" in capsys.readouterr().out


def test_format_table_aligns_columns() -> None:
    text = output.format_table(["A", "LONGER"], [["xyz", "1"], ["", "22"]])
    assert text.splitlines() == ["A    LONGER", "xyz  1", "     22"]


def test_version_listing() -> None:
    listing = output.Listing(
        output.VERSION_COLUMNS,
        [_version(2, res.MODEL_VERSION_STATE_READY), _version(1, res.MODEL_VERSION_STATE_ARCHIVED)],
    )
    header, first, second = output.format_listing(listing).splitlines()
    assert header.split() == ["NAME", "NUMBER", "STATE", "DIGEST", "CREATED"]
    assert first.split() == [
        "namespaces/t/models/m/versions/2", "2", "READY", "sha256:abababababab…", "2027-01-15",
        "08:00:00Z",
    ]  # fmt: skip
    assert second.split()[2] == "ARCHIVED"


def test_batch_listing_shows_errors() -> None:
    results = [
        rs.BatchGetModelVersionsResult(
            reference="t/m", version=_version(1, res.MODEL_VERSION_STATE_READY)
        ),
        rs.BatchGetModelVersionsResult(
            reference="t/m:9", error=status_pb2.Status(code=code_pb2.NOT_FOUND, message="gone")
        ),
    ]
    lines = output.format_listing(output.Listing(output.BATCH_COLUMNS, results)).splitlines()
    assert lines[1].split()[:3] == ["t/m", "namespaces/t/models/m/versions/1", "READY"]
    assert lines[2].split() == ["t/m:9", "NOT_FOUND:", "gone"]


def test_format_fields_flattens_and_skips_unset() -> None:
    version = _version(3, res.MODEL_VERSION_STATE_READY)
    version.source.run_id = "r7"
    version.metrics.update({"b": 0.5, "a": 2.0})
    fields = dict(line.split(": ", 1) for line in output.format_fields(version).splitlines())
    assert {key: value.strip() for key, value in fields.items()} == {
        "name": "namespaces/t/models/m/versions/3",
        "number": "3",
        "state": "READY",
        "metrics": "a=2, b=0.5",
        "source.run_id": "r7",
        "digest": "sha256:" + "ab" * 32,
        "total_size": "0",
        "create_time": "2027-01-15 08:00:00Z",
    }


def test_json_output_is_one_document() -> None:
    listing = output.Listing(output.VERSION_COLUMNS, [_version(1, res.MODEL_VERSION_STATE_READY)])
    (doc,) = json.loads(output.render(listing, as_json=True))
    assert (doc["number"], doc["state"]) == ("1", "MODEL_VERSION_STATE_READY")
    single = json.loads(output.render(_version(1, res.MODEL_VERSION_STATE_READY), as_json=True))
    assert single["createTime"] == "2027-01-15T08:00:00Z"


def test_unreachable_server_names_the_target(capsys: pytest.CaptureFixture[str]) -> None:
    target = f"127.0.0.1:{free_port()}"
    with pytest.raises(SystemExit) as caught:
        cli.main(["models", "delete", "t/m", "--target", target, "--timeout", "5"])
    assert caught.value.code == cli.EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert err.startswith(f"error: UNAVAILABLE: no registry answered at {target}")
    assert "MODELREG_TARGET" in err


def test_local_name_errors_are_reported_like_server_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["versions", "get", "t/m", "--target", f"127.0.0.1:{free_port()}"])
    assert caught.value.code == cli.EXIT_FAILED
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: INVALID_ARGUMENT: ")
    assert err[1].startswith("  version: ")


def test_push_and_pull_options() -> None:
    push = _parse("push", "t/m", "out/", "--concurrency", "8", "--quiet")
    assert (push["model"], push["path"], push["concurrency"], push["quiet"]) == (
        "t/m", "out/", 8, True,
    )  # fmt: skip
    assert push["fail_on_error"] is False
    pull = _parse("pull", "t/m@prod", "dest")
    assert (pull["reference"], pull["dest"], pull["concurrency"], pull["quiet"]) == (
        "t/m@prod", "dest", 4, False,
    )  # fmt: skip


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_bytes_rate_and_eta() -> None:
    now = [100.0]
    stream = _Terminal()
    bar = progress.ProgressBar(stream, clock=lambda: now[0])
    bar("upload", 0, 100 * 2**20)
    now[0] += 2.0
    bar("upload", 50 * 2**20, 100 * 2**20)
    line = stream.getvalue().split("\r")[-1]
    assert line.startswith("upload    [##########··········]  50%  50.0 MiB / 100.0 MiB")
    assert "25.0 MiB/s  0:02" in line
    bar.close()
    assert stream.getvalue().endswith("\n")


def test_progress_bar_redraws_at_most_ten_times_a_second() -> None:
    stream = _Terminal()
    bar = progress.ProgressBar(stream, clock=lambda: 5.0)
    for done in range(0, 90, 10):
        bar("download", done, 100)
    bar("download", 100, 100)  # the last one always shows
    assert stream.getvalue().count("\r") == 2


def test_no_progress_bar_when_quiet_or_not_a_terminal() -> None:
    with progress.progress_bar(False, io.StringIO()) as bar:
        assert bar is None
    with progress.progress_bar(True, _Terminal()) as bar:
        assert bar is None
    with progress.progress_bar(False, _Terminal()) as bar:
        assert bar is not None


def test_byte_and_duration_formats() -> None:
    assert [progress.format_bytes(n) for n in (512, 1536, 3 * 2**30)] == [
        "512 B", "1.5 KiB", "3.0 GiB",
    ]  # fmt: skip
    assert [progress.format_duration(s) for s in (65, 3725)] == ["1:05", "1:02:05"]


# --- what a new user tripped on ----------------------------------------------------------


def test_the_first_alias_move_shows_no_previous_version() -> None:
    alias = res.Alias(name="namespaces/t/models/m/aliases/prod", version_number=2)
    first = rs.SetAliasResponse(alias=alias, previous_version_number=0)
    shown = fields_of(output.format_fields(first))
    assert shown["previous_version_number"] == "(none)"
    assert "previousVersionNumber" not in json.loads(output.render(first, as_json=True))
    moved = rs.SetAliasResponse(alias=alias, previous_version_number=1)
    assert fields_of(output.format_fields(moved))["previous_version_number"] == "1"


def test_alias_history_shows_created_and_deleted_moves_in_words() -> None:
    alias = "namespaces/t/models/m/aliases/prod"
    events = [
        res.AliasEvent(alias=alias, event_id=3, previous_version_number=2, version_number=0),
        res.AliasEvent(alias=alias, event_id=2, previous_version_number=1, version_number=2),
        res.AliasEvent(alias=alias, event_id=1, previous_version_number=0, version_number=1),
    ]
    listing = output.Listing(output.EVENT_COLUMNS, events)
    header, *lines = output.format_listing(listing).splitlines()
    assert header.split() == ["EVENT", "FROM", "TO", "ACTOR", "TIME"]
    assert [line.split() for line in lines] == [
        ["3", "2", "(deleted)"], ["2", "1", "2"], ["1", "(none)", "1"],
    ]  # fmt: skip
    (created,) = [
        e for e in json.loads(output.render(listing, as_json=True)) if e["eventId"] == "1"
    ]
    assert "previousVersionNumber" not in created


def test_a_model_without_versions_shows_none_and_zero_metrics_stay_numbers() -> None:
    model = res.Model(name="namespaces/t/models/m", latest_version_number=0)
    assert fields_of(output.format_fields(model))["latest_version_number"] == "(none)"
    version = _version(1, res.MODEL_VERSION_STATE_READY)
    version.metrics["loss"] = 0.0
    assert fields_of(output.format_fields(version))["metrics"] == "loss=0"


def fields_of(text: str) -> dict[str, str]:
    return {
        key: value.strip() for key, value in (line.split(": ", 1) for line in text.splitlines())
    }


def test_help_documents_the_partial_batch_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert f"  {cli.EXIT_PARTIAL}  batch-get answered, but some references failed" in text
    assert len({cli.EXIT_FAILED, cli.EXIT_USAGE, cli.EXIT_UNREACHABLE, cli.EXIT_PARTIAL}) == 4
    with pytest.raises(SystemExit):
        cli.main(["batch-get", "--help"])
    assert f"exit status {cli.EXIT_PARTIAL} when some failed" in " ".join(
        capsys.readouterr().out.split()
    )


def test_serve_help_shows_the_settings_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    defaults = Settings()
    assert f"env MODELREG_ADDRESS, default: {defaults.address}" in text
    assert f"env MODELREG_HOME, default: {defaults.home}" in text
    assert f"default: one per core, {defaults.workers} here" in text
    assert "Ctrl-C" in text
    assert "MODELREG_POSTGRES_POOL_SIZE connections per process (10)" in text
    assert "MODELREG_UPLOAD_LEASE_SECONDS" in text


def test_serve_flags_stay_unset_so_the_environment_applies() -> None:
    args = _parse("serve")
    assert (args["address"], args["home"], args["workers"]) == (None, None, None)


def test_push_if_changed_is_off_unless_asked() -> None:
    assert _parse("push", "t/m", "out/")["if_changed"] is False
    assert _parse("push", "t/m", "out/", "--if-changed")["if_changed"] is True


def test_the_client_computes_the_version_digest_as_the_server_does() -> None:
    files = [
        ("weights/model.bin", 1 << 40, "ab" * 32),
        ("b.txt", 0, "e3" * 32),
        ("a/b", 7, "01" * 32),
        ("\u00e9t\u00e9.json", 3, "cd" * 32),  # non-ASCII: sorted by UTF-8 bytes
        ("a.b", 7, "02" * 32),
    ]
    local = [LocalFile(path, f"/src/{path}", size, sha) for path, size, sha in files]
    stored = [VersionFile(path, size, sha) for path, size, sha in files]
    assert manifest_digest(local) == server_manifest_digest(stored)
    assert manifest_digest(local[::-1]) == manifest_digest(local)
    assert manifest_digest(local[1:]) != manifest_digest(local)


def test_pushed_repeats_previous_only_for_a_new_version_with_the_same_digest() -> None:
    four, five = (
        _version(4, res.MODEL_VERSION_STATE_READY),
        _version(5, res.MODEL_VERSION_STATE_READY),
    )
    assert Pushed(five, True, four).repeats_previous
    assert not Pushed(four, False, four).repeats_previous  # --if-changed made none
    assert not Pushed(five, True, None).repeats_previous  # the model's first READY version
    other = res.ModelVersion(name=five.name, number=5, digest="sha256:" + "cd" * 32)
    assert not Pushed(other, True, four).repeats_previous
    empty = res.ModelVersion(number=5)  # made READY without files: no digest to compare
    assert not Pushed(empty, True, res.ModelVersion(number=4)).repeats_previous
