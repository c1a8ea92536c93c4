"""The command line: parsing, the table and field printers, and errors, without a server."""

from __future__ import annotations

import io
import json

import pytest
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2, status_pb2

from modelreg import cli
from modelreg.cli import output, progress
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
