"""The command line: parsing, the table and field printers, and errors, without a server."""

from __future__ import annotations

import json

import pytest
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2, status_pb2

from modelreg import cli
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
    text = cli.format_table(["A", "LONGER"], [["xyz", "1"], ["", "22"]])
    assert text.splitlines() == ["A    LONGER", "xyz  1", "     22"]


def test_version_listing() -> None:
    listing = cli.Listing(
        cli.VERSION_COLUMNS,
        [_version(2, res.MODEL_VERSION_STATE_READY), _version(1, res.MODEL_VERSION_STATE_ARCHIVED)],
    )
    header, first, second = cli.format_listing(listing).splitlines()
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
    lines = cli.format_listing(cli.Listing(cli.BATCH_COLUMNS, results)).splitlines()
    assert lines[1].split()[:3] == ["t/m", "namespaces/t/models/m/versions/1", "READY"]
    assert lines[2].split() == ["t/m:9", "NOT_FOUND:", "gone"]


def test_format_fields_flattens_and_skips_unset() -> None:
    version = _version(3, res.MODEL_VERSION_STATE_READY)
    version.source.run_id = "r7"
    version.metrics.update({"b": 0.5, "a": 2.0})
    fields = dict(line.split(": ", 1) for line in cli.format_fields(version).splitlines())
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
    listing = cli.Listing(cli.VERSION_COLUMNS, [_version(1, res.MODEL_VERSION_STATE_READY)])
    (doc,) = json.loads(cli.render(listing, as_json=True))
    assert (doc["number"], doc["state"]) == ("1", "MODEL_VERSION_STATE_READY")
    single = json.loads(cli.render(_version(1, res.MODEL_VERSION_STATE_READY), as_json=True))
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
