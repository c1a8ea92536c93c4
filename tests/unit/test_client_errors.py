"""The SDK's error mapping, name handling and request building, without a server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from modelreg import client
from modelreg.client import (
    AbortedError,
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RegistryError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    artifacts,
    calls,
    files,
    settings,
    versions,
)
from modelreg.v1 import artifact_service_pb2 as art
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as res


def _packed(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _status(code: int, message: str, *, reason: str = "", violations: int = 0) -> status_pb2.Status:
    details = [_packed(error_details_pb2.ErrorInfo(reason=reason, metadata={"k": "v"}))]
    if violations:
        field_violations = [
            error_details_pb2.BadRequest.FieldViolation(field=f"f{i}", description=f"bad {i}")
            for i in range(violations)
        ]
        details.append(_packed(error_details_pb2.BadRequest(field_violations=field_violations)))
    return status_pb2.Status(code=code, message=message, details=details)


class _FailedSyncCall(grpc.RpcError):
    """What the blocking stubs raise: an RpcError that is also a grpc.Call."""

    def __init__(
        self, code: grpc.StatusCode, message: str, trailers: tuple[tuple[str, bytes], ...]
    ):
        self._code, self._message, self._trailers = code, message, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._message

    def trailing_metadata(self) -> Any:  # the stubs' metadata type is private
        return self._trailers


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (code_pb2.INVALID_ARGUMENT, InvalidArgumentError),
        (code_pb2.NOT_FOUND, NotFoundError),
        (code_pb2.ALREADY_EXISTS, AlreadyExistsError),
        (code_pb2.FAILED_PRECONDITION, FailedPreconditionError),
        (code_pb2.ABORTED, AbortedError),
        (code_pb2.PERMISSION_DENIED, PermissionDeniedError),
        (code_pb2.UNAUTHENTICATED, UnauthenticatedError),
        (code_pb2.RESOURCE_EXHAUSTED, ResourceExhaustedError),
        (code_pb2.UNAVAILABLE, UnavailableError),
        (code_pb2.DEADLINE_EXCEEDED, DeadlineExceededError),
    ],
)
def test_each_canonical_code_has_its_class(code: int, cls: type[RegistryError]) -> None:
    error = client.error_from_status(_status(code, "boom"))
    assert type(error) is cls
    assert error.code.value[0] == code


@pytest.mark.parametrize("code", [code_pb2.INTERNAL, code_pb2.UNKNOWN, code_pb2.CANCELLED, 99])
def test_other_codes_map_to_the_base_class(code: int) -> None:
    error = client.error_from_status(_status(code, "boom"))
    assert type(error) is RegistryError


def test_details_are_unpacked() -> None:
    status = _status(code_pb2.INVALID_ARGUMENT, "bad request", reason="BAD_ID", violations=2)
    error = client.error_from_status(status)
    assert isinstance(error, InvalidArgumentError)
    assert error.message == "bad request"
    assert error.reason == "BAD_ID"
    assert error.metadata == {"k": "v"}
    assert error.field_violations == [("f0", "bad 0"), ("f1", "bad 1")]
    assert str(error) == "INVALID_ARGUMENT: bad request"


def test_a_status_without_details_gives_empty_details() -> None:
    error = client.error_from_status(status_pb2.Status(code=code_pb2.NOT_FOUND, message="gone"))
    assert (error.reason, error.metadata, error.field_violations) == ("", {}, [])


def test_aio_errors_read_the_details_trailer() -> None:
    status = _status(code_pb2.ABORTED, "stale etag", reason="ETAG_MISMATCH")
    trailers = grpc.aio.Metadata((client.DETAILS_HEADER, status.SerializeToString()))
    exc = grpc.aio.AioRpcError(
        grpc.StatusCode.ABORTED, grpc.aio.Metadata(), trailers, "stale etag", None
    )
    error = client.error_from_rpc(exc)
    assert isinstance(error, AbortedError)
    assert error.reason == "ETAG_MISMATCH"


def test_aio_errors_without_a_trailer_keep_code_and_message() -> None:
    exc = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "refused", None
    )
    error = client.error_from_rpc(exc)
    assert isinstance(error, UnavailableError)
    assert (error.message, error.reason) == ("refused", "")


@pytest.mark.parametrize(
    ("attached_message", "reason"),
    [
        ("no such model", "MODEL_NOT_FOUND"),
        ("another message", ""),  # details that disagree with the status are ignored
    ],
)
def test_sync_errors_read_the_rich_status(attached_message: str, reason: str) -> None:
    status = _status(code_pb2.NOT_FOUND, attached_message, reason="MODEL_NOT_FOUND")
    trailers = ((client.DETAILS_HEADER, status.SerializeToString()),)
    error = client.error_from_rpc(
        _FailedSyncCall(grpc.StatusCode.NOT_FOUND, "no such model", trailers)
    )
    assert isinstance(error, NotFoundError)
    assert (error.message, error.reason) == ("no such model", reason)


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("m", "namespaces/default/models/m"),
        ("team/m", "namespaces/team/models/m"),
        ("namespaces/team/models/m", "namespaces/team/models/m"),
    ],
)
def test_model_short_forms(ref: str, name: str) -> None:
    assert client.model_name(ref) == name


@pytest.mark.parametrize("ref", ["team/m:3", "team/m@prod", "Team/m", "", "a/b/c"])
def test_model_refusals_are_local_invalid_arguments(ref: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.model_name(ref)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in caught.value.field_violations] == ["model"]


@pytest.mark.parametrize(
    ("ref", "number", "name"),
    [
        ("team/m:3", None, "namespaces/team/models/m/versions/3"),
        ("m:12", None, "namespaces/default/models/m/versions/12"),
        ("namespaces/t/models/m/versions/4", None, "namespaces/t/models/m/versions/4"),
        ("team/m", 7, "namespaces/team/models/m/versions/7"),
    ],
)
def test_version_forms(ref: str, number: int | None, name: str) -> None:
    assert client.version_name(ref, number) == name


@pytest.mark.parametrize(("ref", "number"), [("team/m", None), ("team/m@prod", None), ("m", 0)])
def test_version_refusals(ref: str, number: int | None) -> None:
    with pytest.raises(InvalidArgumentError):
        client.version_name(ref, number)


def test_alias_and_namespace_names() -> None:
    assert client.alias_name("t/m", "prod") == "namespaces/t/models/m/aliases/prod"
    assert client.namespace_name("t") == client.namespace_name("namespaces/t") == "namespaces/t"
    with pytest.raises(InvalidArgumentError):
        client.alias_name("t/m", "123")
    with pytest.raises(InvalidArgumentError):
        client.namespace_name("Bad")


# --- requests and retries -------------------------------------------------------------------


def _request_id(call: calls.Call[Any]) -> str:
    assert isinstance(call.request, rs.CreateModelRequest)
    return call.request.request_id


def test_creates_carry_a_fresh_request_id_and_are_retried() -> None:
    first, second = calls.create_model("t/m"), calls.create_model("t/m")
    assert _request_id(first) != _request_id(second) != ""
    assert first.idempotent
    assert _request_id(calls.create_model("t/m", request_id="abc")) == "abc"


def test_update_masks_name_only_the_fields_given() -> None:
    call = calls.update_model("t/m", description="", labels={"a": "b"}, etag="e1")
    assert isinstance(call.request, rs.UpdateModelRequest)
    assert list(call.request.update_mask.paths) == ["description", "labels"]
    assert call.request.model.etag == "e1"
    assert not call.idempotent
    with pytest.raises(InvalidArgumentError):
        calls.update_model("t/m")


def test_version_states_accept_short_names() -> None:
    pages = versions.list_versions("t/m", states=["ready", res.MODEL_VERSION_STATE_FAILED])
    request = pages.call("tok").request
    assert isinstance(request, rs.ListModelVersionsRequest)
    assert list(request.states) == [res.MODEL_VERSION_STATE_READY, res.MODEL_VERSION_STATE_FAILED]
    assert request.page_token == "tok"
    with pytest.raises(InvalidArgumentError):
        versions.list_versions("t/m", states=["done"])


def test_set_alias_sends_the_expected_version_only_when_given() -> None:
    unguarded = versions.set_alias("t/m", "prod", 3).request
    guarded = versions.set_alias("t/m", "prod", 3, expected_version=0).request
    assert isinstance(unguarded, rs.SetAliasRequest)
    assert isinstance(guarded, rs.SetAliasRequest)
    assert not unguarded.HasField("expected_version_number")
    assert guarded.HasField("expected_version_number")


def test_only_unavailable_is_retried_and_only_within_budget() -> None:
    attempts = settings.Attempts(timeout=30, retries=2)
    assert attempts.next_delay(grpc.StatusCode.NOT_FOUND) is None
    first, second, third = (attempts.next_delay(grpc.StatusCode.UNAVAILABLE) for _ in range(3))
    assert first is not None
    assert second is not None
    assert settings.FIRST_BACKOFF / 2 <= first <= settings.FIRST_BACKOFF  # jittered, then doubled
    assert settings.FIRST_BACKOFF <= second <= 2 * settings.FIRST_BACKOFF
    assert third is None
    assert settings.Attempts(timeout=30, retries=0).next_delay(grpc.StatusCode.UNAVAILABLE) is None


def test_retries_stop_at_the_deadline() -> None:
    attempts = settings.Attempts(timeout=0.001, retries=5)
    assert attempts.next_delay(grpc.StatusCode.UNAVAILABLE) is None


# --- push and pull, locally -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["../up", "/abs", "a//b", "a/./b", "a\\b", "", "a/.."])
def test_pull_refuses_paths_that_escape_the_destination(path: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        files.safe_destination(tmp_path, path)
    assert caught.value.reason == "UNSAFE_PATH"


def test_pull_refuses_a_symlink_out_of_the_destination(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "link").symlink_to(tmp_path)
    assert files.safe_destination(tmp_path / "dest", "a/b.bin") == tmp_path / "dest" / "a/b.bin"
    with pytest.raises(InvalidArgumentError):
        files.safe_destination(tmp_path / "dest", "link/escaped.bin")


def test_download_messages_hand_out_data_without_copying() -> None:
    data = bytes(range(256)) * 1024
    raw = art.DownloadFileResponse(data=data).SerializeToString()
    received = artifacts.parse_download(raw)
    assert received.data == data
    assert received.data.obj is raw  # a view of the wire bytes
    first = art.DownloadFileResponse(
        version="v", file=art.ManifestEntry(path="p", size=3), data=b"abc"
    )
    parsed = artifacts.parse_download(first.SerializeToString())
    assert (bytes(parsed.data), parsed.version, parsed.file) == (b"abc", "v", first.file)
    assert bytes(artifacts.parse_download(b"").data) == b""


def test_local_files_lists_a_directory_by_path(tmp_path: Path) -> None:
    (tmp_path / "b" / "c").mkdir(parents=True)
    for name in ("b/c/d.bin", "a.txt", "b/e"):
        (tmp_path / name).write_bytes(b"x")
    assert [name for name, _ in files.local_files(tmp_path)] == ["a.txt", "b/c/d.bin", "b/e"]
    assert files.local_files(tmp_path / "a.txt") == [("a.txt", tmp_path / "a.txt")]
    with pytest.raises(FileNotFoundError):
        files.local_files(tmp_path / "nope")


def test_a_state_the_call_waits_for_is_retried_until_the_deadline_not_the_budget() -> None:
    failed = grpc.StatusCode.FAILED_PRECONDITION
    attempts = settings.Attempts(timeout=30, retries=0, waits_for=("UPLOAD_IN_PROGRESS",))
    assert all(attempts.next_delay(failed, "UPLOAD_IN_PROGRESS") for _ in range(10))
    assert attempts.next_delay(failed, "VERSION_NOT_PENDING") is None
    assert attempts.next_delay(grpc.StatusCode.UNAVAILABLE) is None  # no retries budgeted
    late = settings.Attempts(timeout=0.001, retries=0, waits_for=("UPLOAD_IN_PROGRESS",))
    assert late.next_delay(failed, "UPLOAD_IN_PROGRESS") is None
