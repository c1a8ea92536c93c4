"""Short names (`ns/model`, `ns/model:7`) to resource names, checked before sending."""

from __future__ import annotations

from modelreg.client.errors import checked_locally
from modelreg.domain import errors as domain_errors
from modelreg.domain import names


def namespace_name(namespace: str) -> str:
    """`ns` or `namespaces/ns` -> `namespaces/ns`."""
    with checked_locally():
        if namespace.startswith("namespaces/"):
            namespace = names.parse_namespace_name(namespace, "namespace")
        return f"namespaces/{names.check_id(namespace, 'namespace', 'namespace id')}"


def model_key(model: str) -> names.ModelKey:
    """`ns/model`, `model` (namespace `default`) or a model resource name -> ModelKey."""
    with checked_locally():
        ref = names.parse_reference(model, "model")
        if ref.number is not None or ref.alias is not None:
            raise domain_errors.InvalidArgument.field(
                "model", f"{model!r} names a version; expected ns/model"
            )
        return ref.model


def model_name(model: str) -> str:
    """`ns/model`, `model` or a model resource name -> `namespaces/ns/models/model`."""
    return model_key(model).name


def version_name(version: str, number: int | None = None) -> str:
    """`ns/model:7` or a version resource name, or a model and `number`, -> resource name."""
    if number is not None:
        key = model_key(version)
        with checked_locally():
            return names.VersionKey(key, names.check_number(number, "number")).name
    with checked_locally():
        ref = names.parse_reference(version, "version")
        if ref.number is None:
            raise domain_errors.InvalidArgument.field(
                "version", f"{version!r} names no version number; expected ns/model:N"
            )
        return names.VersionKey(ref.model, ref.number).name


def alias_name(model: str, alias: str) -> str:
    """A model and an alias id -> `namespaces/ns/models/model/aliases/alias`."""
    key = model_key(model)
    with checked_locally():
        return names.AliasKey(key, names.check_alias(alias, "alias")).name
