"""The gateway's settings: one typed object, read once at start.

Precedence, highest first: command-line flags, `GATEWAY_*` environment variables,
`gateway.yaml` in the config directory, the defaults below.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.manifests import GatewayManifest

ENV_PREFIX = "GATEWAY_"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway process is configured with."""

    config_dir: Path = Path("config")
    host: str = "127.0.0.1"
    port: int = 8000
    request_timeout_s: float = 30.0
    runtime_start_timeout_s: float = 60.0
    health_check_timeout_s: float = 1.0
    drain_timeout_s: float = 10.0
    log_level: str = "info"
    envs_dir: Path = Path(".gateway/envs")  # per-model environments made by `gateway build`

    @classmethod
    def load(
        cls,
        config_dir: Path,
        gateway: GatewayManifest,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Merge the file, the environment and explicit overrides (None values are ignored)."""
        values: dict[str, Any] = {
            "config_dir": config_dir,
            "host": gateway.host,
            "port": gateway.port,
            "request_timeout_s": gateway.request_timeout_s,
            "runtime_start_timeout_s": gateway.runtime_start_timeout_s,
        }
        env = os.environ if env is None else env
        for field in fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None and field.name != "config_dir":
                values[field.name] = _convert(field.name, raw, type(getattr(cls(), field.name)))
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls(**values)


def _convert(name: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {kind.__name__}") from None
