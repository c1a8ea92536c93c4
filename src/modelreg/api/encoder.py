"""The Encoder port over protobuf: what the cached lookups store and api/wire.py frames."""

from __future__ import annotations

from modelreg.api import convert
from modelreg.domain.types import Model, ModelVersion


class ProtoEncoder:
    """The Encoder port: domain values to serialized modelreg.v1 messages."""

    def version(self, version: ModelVersion) -> bytes:
        return convert.version_to_proto(version).SerializeToString()

    def model(self, model: Model) -> bytes:
        return convert.model_to_proto(model).SerializeToString()
