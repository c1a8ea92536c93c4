"""Every cache key and Redis name, in one place.

A lookup walks at most three entries of one model: its state, a pointer (alias or
`latest`) and a version. L1 uses the keys as written here; L2 prefixes them with
`mr:{epoch}:` so that bumping the epoch orphans everything written before.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from modelreg.domain import events
from modelreg.domain.names import (
    LATEST,
    ModelKey,
    Reference,
    parse_alias_name,
    parse_model_name,
    parse_version_name,
)
from modelreg.domain.types import Event

# the model's state for lookups: b"A" active, b"D"+error deleted, b"N"+error missing
MODEL_STATE = "M|"
# GetModel's answer: b"V"+encoded model, or b"N"+error
MODEL = "G|"
# alias or `latest` of a model -> b"V"+version number, or b"N"+error
POINTER = "P|"
# one version -> b"V"+encoded version, or b"N"+error
VERSION = "V|"
# L2 only, per model: bumped by every committed write; fills compare-and-set on it
COUNTER = "C|"
# L2 only: the current epoch (see above)
EPOCH = "mr:epoch"
# L2 only: pub/sub channel of keys every process drops from its L1; b"*" drops all
CHANNEL = "mr:invalidate"


def model_id(model: ModelKey) -> str:
    """The model part of every key of that model."""
    return model.short


def state_key(model: ModelKey) -> str:
    return MODEL_STATE + model.short


def model_key(model: ModelKey) -> str:
    return MODEL + model.short


def pointer_key(model: ModelKey, name: str) -> str:
    return f"{POINTER}{model.short}@{name}"


def version_key(model: ModelKey, number: int) -> str:
    return f"{VERSION}{model.short}:{number}"


def pointer_of(ref: Reference) -> str | None:
    """The pointer a reference goes through, or None for a lookup by number."""
    if ref.number is not None:
        return None
    return pointer_key(ref.model, ref.alias or LATEST)


def invalidated_by(committed: Iterable[Event]) -> dict[str, list[str]]:
    """The keys each committed event makes stale, grouped by model."""
    stale: dict[str, list[str]] = defaultdict(list)
    for event in committed:
        if event.model is not None:
            stale[model_id(event.model)] += _keys_of(event)
    return dict(stale)


def _keys_of(event: Event) -> list[str]:
    kind, resource = event.kind, event.resource
    if kind.startswith("model."):
        model = parse_model_name(resource)
        return [state_key(model), model_key(model)]
    if kind.startswith("alias."):
        alias = parse_alias_name(resource)
        return [pointer_key(alias.model, alias.alias)]
    if resource.count("/") >= 5:  # a version, or something inside one (its files)
        version = parse_version_name("/".join(resource.split("/")[:6]))
        keys = [version_key(version.model, version.number)]
        if kind != events.VERSION_UPDATED:  # state may have changed: `latest` may move
            keys += [pointer_key(version.model, LATEST), model_key(version.model)]
        return keys
    return []
