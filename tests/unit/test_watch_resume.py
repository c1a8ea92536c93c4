"""The SDK's resuming watch decides by itself: what it asks for after a cut, which
messages it yields (each revision once, rising), and which failures it cures."""

from __future__ import annotations

import grpc
import pytest

from modelreg.client import InvalidArgumentError, RegistryError
from modelreg.client.errors import make_error
from modelreg.client.watch import MAX_BACKOFF, Resumption
from modelreg.v1 import watch_service_pb2 as ws


def _change(revision: int) -> ws.WatchResponse:
    return ws.WatchResponse(revision=revision, events=[ws.ChangeEvent(kind="alias.set")])


def _bookmark(revision: int) -> ws.WatchResponse:
    return ws.WatchResponse(revision=revision, bookmark=True)


def test_it_resumes_after_the_last_revision_yielded_or_bookmarked() -> None:
    resumption = Resumption(models=["vision/resnet"], from_oldest=True)
    first = resumption.request()
    assert first.WhichOneof("start") == "start_at"
    assert first.start_at == ws.WATCH_START_OLDEST
    assert list(first.models) == ["namespaces/vision/models/resnet"]
    assert not resumption.accept(_bookmark(4))  # the opening bookmark: nothing to yield
    assert resumption.accept(_change(7))
    assert resumption.accept(_change(9))
    assert not resumption.accept(_bookmark(12))  # progress, not yielded by default
    again = resumption.request()
    assert again.after_revision == 12
    assert list(again.models) == ["namespaces/vision/models/resnet"]


def test_a_revision_at_or_below_the_position_is_never_yielded_again() -> None:
    resumption = Resumption(after_revision=5, bookmarks=True)
    assert not resumption.accept(_change(5))
    assert resumption.accept(_change(6))
    assert not resumption.accept(_change(6))  # the message in flight at a cut, again
    assert not resumption.accept(_bookmark(6))
    assert resumption.accept(_bookmark(8))


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    ],
)
def test_cuts_are_retried_with_a_growing_capped_backoff(code: grpc.StatusCode) -> None:
    resumption = Resumption()
    delays = [resumption.retry_after(make_error(code, "cut")) for _ in range(12)]
    assert delays[1] > delays[0] / 2  # jittered, but growing
    assert max(delays) <= MAX_BACKOFF
    assert resumption.retry_after(None) <= MAX_BACKOFF  # a stream that simply ended
    resumption.accept(_change(1))
    assert resumption.retry_after(None) < 0.1  # a message resets the backoff


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.INTERNAL],
)
def test_what_a_reconnect_cannot_cure_is_raised(code: grpc.StatusCode) -> None:
    error = make_error(code, "no")
    with pytest.raises(RegistryError) as caught:
        Resumption().retry_after(error)
    assert caught.value is error


def test_bad_names_are_refused_before_sending() -> None:
    with pytest.raises(InvalidArgumentError):
        Resumption(aliases=["vision/resnet"])  # no @alias
    with pytest.raises(InvalidArgumentError):
        Resumption(models=["vision/resnet:3"])
    assert list(Resumption(aliases=["vision/resnet@prod"]).request().aliases) == [
        "namespaces/vision/models/resnet/aliases/prod"
    ]
