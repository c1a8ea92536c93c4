"""Field rules shared by the aggregates: sizes, formats, etags and update masks."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from modelreg.domain.errors import Aborted, InvalidArgument
from modelreg.domain.types import VersionSource, etag_of

MAX_DESCRIPTION = 4096
MAX_TAGS = 64
MAX_TAG = 63
MAX_MAP_ENTRIES = 256
MAX_KEY = 128
MAX_VALUE = 1024
MAX_REQUEST_ID = 128
MAX_SOURCE_FIELD = 256

_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]*")


def check_description(value: str, field: str) -> str:
    """A description of at most 4096 characters."""
    return check_length(value, field, MAX_DESCRIPTION)


def check_length(value: str, field: str, limit: int) -> str:
    """A string of at most `limit` characters."""
    if len(value) > limit:
        raise InvalidArgument.field(field, f"must be at most {limit} characters, got {len(value)}")
    return value


def check_tags(values: Iterable[str], field: str) -> tuple[str, ...]:
    """A set of short tags, returned sorted and without duplicates."""
    tags = sorted(set(values))
    if len(tags) > MAX_TAGS:
        raise InvalidArgument.field(field, f"at most {MAX_TAGS} tags, got {len(tags)}")
    for tag in tags:
        if len(tag) > MAX_TAG or not _TAG.fullmatch(tag):
            raise InvalidArgument.field(
                field, f"tag {tag[:80]!r} must be 1-{MAX_TAG} of [A-Za-z0-9._:/-]"
            )
    return tuple(tags)


def check_string_map(values: Mapping[str, str], field: str) -> dict[str, str]:
    """Labels or params: bounded count, identifier-like keys, bounded values."""
    _check_keys(values, field)
    for key, value in values.items():
        check_length(value, f"{field}[{key}]", MAX_VALUE)
    return dict(sorted(values.items()))


def check_metrics(values: Mapping[str, float], field: str) -> dict[str, float]:
    """Metrics: bounded count, identifier-like keys, finite numbers."""
    _check_keys(values, field)
    for key, value in values.items():
        if not math.isfinite(value):
            raise InvalidArgument.field(f"{field}[{key}]", "metric must be a finite number")
    return dict(sorted(values.items()))


def check_source(source: VersionSource, field: str) -> VersionSource:
    """Provenance fields of bounded length."""
    for name in ("run_id", "code_commit", "framework", "framework_version"):
        check_length(getattr(source, name), f"{field}.{name}", MAX_SOURCE_FIELD)
    return source


def check_request_id(value: str) -> str:
    """An idempotency key of bounded length (empty = none)."""
    return check_length(value, "request_id", MAX_REQUEST_ID)


def check_etag(given: str, revision: int, resource: str) -> None:
    """ABORTED if the caller sent an etag and the resource has moved on."""
    if given and given != etag_of(revision):
        raise Aborted(
            f"{resource} was changed since it was read (etag {given} is stale)",
            metadata={"resource": resource, "current_etag": etag_of(revision)},
        )


def check_mask(paths: Iterable[str], allowed: frozenset[str]) -> frozenset[str]:
    """The update mask's paths, all of which must be updatable fields."""
    given = frozenset(paths)
    if not given:
        raise InvalidArgument.field("update_mask", f"name at least one of {sorted(allowed)}")
    unknown = sorted(given - allowed)
    if unknown:
        raise InvalidArgument.field(
            "update_mask", f"cannot update {unknown}; updatable fields are {sorted(allowed)}"
        )
    return given


def _check_keys(values: Mapping[str, object], field: str) -> None:
    if len(values) > MAX_MAP_ENTRIES:
        raise InvalidArgument.field(field, f"at most {MAX_MAP_ENTRIES} entries, got {len(values)}")
    for key in values:
        if len(key) > MAX_KEY or not _KEY.fullmatch(key):
            raise InvalidArgument.field(
                field,
                f"key {key[:80]!r} must be 1-{MAX_KEY} of [A-Za-z0-9_.:/-], not led by a digit",
            )
