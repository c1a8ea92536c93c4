"""Settings, read from the environment once and validated at start-up.

MODELREG_ADDRESS             HOST:PORT to listen on (127.0.0.1:50051)
MODELREG_HOME                data directory: embedded Postgres, blobs (the user's data dir)
MODELREG_POSTGRES_URL        PostgreSQL to use; unset = embedded in MODELREG_HOME
MODELREG_POSTGRES_READ_URL   read replica for lookups that miss the caches (unset)
MODELREG_POSTGRES_POOL_SIZE  connections per process (10)
MODELREG_WORKERS             server processes sharing the port (1)
MODELREG_GRACE_SECONDS       how long shutdown waits for in-flight calls (10)
MODELREG_LOG_LEVEL           DEBUG, INFO, WARNING or ERROR (INFO)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs

DEFAULT_ADDRESS = "127.0.0.1:50051"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable to change."""


def default_home() -> Path:
    return platformdirs.user_data_path("modelreg")


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to start; see the module docstring for the variables."""

    address: str = DEFAULT_ADDRESS
    home: Path = field(default_factory=default_home)
    postgres_url: str | None = None
    postgres_read_url: str | None = None
    postgres_pool_size: int = 10
    workers: int = 1
    grace_seconds: float = 10.0
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read MODELREG_* variables, then apply non-None `overrides` (command-line flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"MODELREG_{f.name.upper()}")
            if raw:
                values[f.name] = _parse(f.name, raw)
        settings = cls(**values)
        given = {
            k: _parse(k, v) if isinstance(v, str) else v
            for k, v in overrides.items()
            if v is not None
        }
        return replace(settings, **given).validated()

    def validated(self) -> Settings:
        """Raise ConfigError naming the variable of the first bad setting."""
        host, _, port = self.address.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(
                f"MODELREG_ADDRESS (--address) must be HOST:PORT, got {self.address!r}"
            )
        for name in ("postgres_url", "postgres_read_url"):
            url = getattr(self, name)
            if url and not url.startswith(("postgres://", "postgresql://")):
                raise ConfigError(f"MODELREG_{name.upper()} must start with postgresql://")
        if self.workers < 1 or self.postgres_pool_size < 1:
            raise ConfigError("MODELREG_WORKERS and MODELREG_POSTGRES_POOL_SIZE must be at least 1")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("MODELREG_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return self


def _parse(name: str, raw: str) -> Any:
    kinds: dict[str, type] = {"home": Path, "workers": int, "postgres_pool_size": int}
    kinds["grace_seconds"] = float
    kind = kinds.get(name, str)
    try:
        return kind(raw)
    except ValueError as exc:
        raise ConfigError(
            f"MODELREG_{name.upper()} must be a {kind.__name__}, got {raw!r}"
        ) from exc
