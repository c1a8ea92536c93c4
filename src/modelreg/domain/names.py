"""Resource names and short references: the one parser for both.

Resource names follow DESIGN.md §2 (`namespaces/{ns}/models/{model}/versions/{n}`).
Short references are for people and serving configs: `ns/model@alias`,
`ns/model:7`, `ns/model` (latest READY); the namespace `default` may be omitted.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from modelreg.domain.errors import InvalidArgument

DEFAULT_NAMESPACE = "default"
LATEST = "latest"  # reserved alias word: `ns/model@latest` means `ns/model`
MAX_VERSION = 2**63 - 1

_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_NUMBER = re.compile(r"[1-9][0-9]{0,18}")
# a principal: an API-key owner, a JWT claim, a certificate SAN ("alice",
# "system:serviceaccount:ml:trainer", "spiffe://cluster/ns/ml/sa/trainer"): printable
# ASCII, no space, 1-256
_PRINCIPAL = re.compile(r"[!-~]{1,256}")
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # artifact_service.proto documents it
_SHORT_REF = re.compile(
    r"(?:(?P<ns>[^/@:]+)/)?(?P<model>[^/@:]+)(?:@(?P<alias>[^/@:]*)|:(?P<num>[^/@:]*))?"
)


@dataclass(frozen=True, slots=True)
class NamespaceKey:
    """Identifies a namespace."""

    namespace: str

    @property
    def name(self) -> str:
        return f"namespaces/{self.namespace}"


@dataclass(frozen=True, slots=True)
class ModelKey:
    """Identifies a model: namespace id and model id."""

    namespace: str
    model: str

    @property
    def name(self) -> str:
        return f"namespaces/{self.namespace}/models/{self.model}"

    @property
    def short(self) -> str:
        return f"{self.namespace}/{self.model}"


@dataclass(frozen=True, slots=True)
class VersionKey:
    """Identifies one version of a model."""

    model: ModelKey
    number: int

    @property
    def name(self) -> str:
        return f"{self.model.name}/versions/{self.number}"


@dataclass(frozen=True, slots=True)
class AliasKey:
    """Identifies one alias of a model."""

    model: ModelKey
    alias: str

    @property
    def name(self) -> str:
        return f"{self.model.name}/aliases/{self.alias}"


@dataclass(frozen=True, slots=True)
class PrincipalKey:
    """Identifies a principal (a person or a service account) by its name."""

    principal: str

    @property
    def name(self) -> str:
        return f"principals/{self.principal}"


@dataclass(frozen=True, slots=True)
class RegistryKey:
    """The whole registry: the subject of what is not inside one namespace (a global
    role binding)."""

    @property
    def name(self) -> str:
        return REGISTRY


REGISTRY = "registry"  # the resource name of the whole registry


@dataclass(frozen=True, slots=True)
class WebhookKey:
    """Identifies a webhook subscription."""

    webhook_id: str

    @property
    def name(self) -> str:
        return f"webhooks/{self.webhook_id}"


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed lookup: by number, by alias, or (neither) the latest READY version."""

    model: ModelKey
    number: int | None = None
    alias: str | None = None

    @property
    def canonical(self) -> str:
        """One spelling per meaning, usable as a cache key."""
        if self.number is not None:
            return f"{self.model.short}:{self.number}"
        return f"{self.model.short}@{self.alias or LATEST}"


def check_id(value: str, field: str, kind: str = "id") -> str:
    """Return `value` if it is a valid id, else raise INVALID_ARGUMENT on `field`."""
    if not value:
        raise InvalidArgument.field(field, f"{kind} is required")
    if not _ID.fullmatch(value):
        raise InvalidArgument.field(
            field, f"{kind} {_shown(value)} must match [a-z0-9][a-z0-9._-]{{0,62}}"
        )
    return value


def check_alias(value: str, field: str) -> str:
    """Return `value` if it can name an alias: an id, not all digits, not `latest`."""
    check_id(value, field, "alias")
    if value.isdigit():
        raise InvalidArgument.field(field, f"alias {value!r} must not be all digits")
    if value == LATEST:
        raise InvalidArgument.field(
            field, "alias 'latest' is reserved for the latest READY version"
        )
    return value


def check_number(value: int, field: str) -> int:
    """Return a version number if it is in 1..2^63-1."""
    if not 1 <= value <= MAX_VERSION:
        raise InvalidArgument.field(field, f"version number must be between 1 and {MAX_VERSION}")
    return value


def check_upload_id(value: str, field: str = "upload_id") -> str:
    """Return `value` if it can name an upload: 1-64 of [A-Za-z0-9_-] (a UUID fits)."""
    if not _UPLOAD_ID.fullmatch(value):
        raise InvalidArgument.field(field, "must be 1-64 of [A-Za-z0-9_-]")
    return value


def check_principal(value: str, field: str = "principal") -> str:
    """Return `value` if it can name a principal: 1-256 printable ASCII, no space."""
    if not _PRINCIPAL.fullmatch(value):
        raise InvalidArgument.field(field, "must be 1-256 printable ASCII characters, no space")
    return value


def parse_principal_name(name: str, field: str = "name") -> PrincipalKey:
    """`principals/{principal}` -> PrincipalKey (the principal may itself hold '/')."""
    prefix, _, principal = name.partition("/")
    _expect(prefix == "principals" and bool(principal), field, name, "principals/{principal}")
    return PrincipalKey(check_principal(principal, field))


def parse_registry_name(name: str, field: str = "name") -> RegistryKey:
    """`registry` -> RegistryKey."""
    _expect(name == REGISTRY, field, name, REGISTRY)
    return RegistryKey()


def parse_webhook_key(name: str, field: str = "name") -> WebhookKey:
    """`webhooks/{webhook}` -> WebhookKey."""
    parts = _split(name, field, 2, "webhooks/{webhook}")
    _expect(parts[0] == "webhooks", field, name, "webhooks/{webhook}")
    return WebhookKey(check_id(parts[1], field, "webhook id"))


def parse_namespace_name(name: str, field: str = "name") -> str:
    """`namespaces/{ns}` -> ns."""
    parts = _split(name, field, 2, "namespaces/{namespace}")
    _expect(parts[0] == "namespaces", field, name, "namespaces/{namespace}")
    return check_id(parts[1], field, "namespace id")


def parse_model_name(name: str, field: str = "name") -> ModelKey:
    """`namespaces/{ns}/models/{model}` -> ModelKey."""
    parts = _split(name, field, 4, "namespaces/{namespace}/models/{model}")
    return _model_key(parts, name, field)


def parse_version_name(name: str, field: str = "name") -> VersionKey:
    """`namespaces/{ns}/models/{model}/versions/{n}` -> VersionKey."""
    pattern = "namespaces/{namespace}/models/{model}/versions/{number}"
    parts = _split(name, field, 6, pattern)
    _expect(parts[4] == "versions", field, name, pattern)
    return VersionKey(_model_key(parts, name, field), _parse_number(parts[5], field))


def parse_alias_name(name: str, field: str = "name") -> AliasKey:
    """`namespaces/{ns}/models/{model}/aliases/{alias}` -> AliasKey."""
    pattern = "namespaces/{namespace}/models/{model}/aliases/{alias}"
    parts = _split(name, field, 6, pattern)
    _expect(parts[4] == "aliases", field, name, pattern)
    return AliasKey(_model_key(parts, name, field), check_alias(parts[5], field))


def parse_reference(ref: str, field: str = "reference") -> Reference:
    """Parse any reference form: short (`ns/model@alias`, `ns/model:7`, `ns/model`)
    or a model, version or alias resource name."""
    try:
        return _parse_reference_cached(ref)
    except InvalidArgument as exc:  # name the caller's field
        raise InvalidArgument([(field, what) for _, what in exc.violations]) from None


# Serving fleets ask for the same few references over and over: parse each once.
@functools.lru_cache(maxsize=65_536)
def _parse_reference_cached(ref: str) -> Reference:
    return _parse_reference(ref, "reference")


def _parse_reference(ref: str, field: str) -> Reference:
    if not ref:
        raise InvalidArgument.field(field, "reference is required")
    if len(ref) > 300:
        raise InvalidArgument.field(field, "reference is longer than 300 characters")
    if ref.startswith("namespaces/"):
        return _parse_resource_reference(ref, field)
    match = _SHORT_REF.fullmatch(ref)
    if match is None:
        raise InvalidArgument.field(
            field, f"reference {_shown(ref)} must look like ns/model, ns/model@alias or ns/model:7"
        )
    model = ModelKey(
        check_id(match["ns"] or DEFAULT_NAMESPACE, field, "namespace id"),
        check_id(match["model"], field, "model id"),
    )
    if match["num"] is not None:
        return Reference(model, number=_parse_number(match["num"], field))
    if match["alias"] is None or match["alias"] == LATEST:
        return Reference(model)
    return Reference(model, alias=check_alias(match["alias"], field))


def _parse_resource_reference(ref: str, field: str) -> Reference:
    depth = ref.count("/") + 1
    if depth == 4:
        return Reference(parse_model_name(ref, field))
    if depth == 6 and ref.split("/")[4] == "aliases":
        key = parse_alias_name(ref, field)
        return Reference(key.model, alias=key.alias)
    version = parse_version_name(ref, field)
    return Reference(version.model, number=version.number)


def _parse_number(text: str, field: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise InvalidArgument.field(
            field, f"version number {_shown(text)} must be a positive integer"
        )
    return check_number(int(text), field)


def _model_key(parts: list[str], name: str, field: str) -> ModelKey:
    pattern = "namespaces/{namespace}/models/{model}"
    _expect(parts[0] == "namespaces" and parts[2] == "models", field, name, pattern)
    return ModelKey(
        check_id(parts[1], field, "namespace id"), check_id(parts[3], field, "model id")
    )


def _split(name: str, field: str, count: int, pattern: str) -> list[str]:
    if not name:
        raise InvalidArgument.field(field, "name is required")
    parts = name.split("/")
    _expect(len(parts) == count, field, name, pattern)
    return parts


def _expect(ok: bool, field: str, name: str, pattern: str) -> None:
    if not ok:
        raise InvalidArgument.field(field, f"name {_shown(name)} must look like {pattern}")


def _shown(value: str) -> str:
    """Quote user input for a message, cut so a huge value cannot flood the reply."""
    return repr(value if len(value) <= 80 else value[:77] + "...")
