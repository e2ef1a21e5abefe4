"""The gateway's settings: one typed object, read once at start.

Precedence, highest first: command-line flags, `GATEWAY_*` environment variables,
`gateway.yaml` in the config directory, the defaults below. In `gateway.yaml` the fields
are grouped in the sections of `SECTIONS` (e.g. `limits: {max_body_bytes: 1048576}`); as
environment variables they are `GATEWAY_<FIELD>` (e.g. `GATEWAY_MAX_BODY_BYTES`).
"""

from __future__ import annotations

import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from gateway.errors import ConfigError

ENV_PREFIX = "GATEWAY_"
# The gRPC client backend calls go over: grpcio's, or the gateway's own (gateway.grpc_client).
BackendClient = Literal["grpcio", "inloop"]
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A client key, stored as the hex SHA-256 of the key; `applications` it may call."""

    name: str
    sha256: str
    applications: tuple[str, ...] = ("*",)

    def allows(self, application: str) -> bool:
        return "*" in self.applications or application in self.applications


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """API keys for clients and tokens for admin routes (both stored hashed). With no keys,
    client routes are open; with no admin tokens, admin routes are open to loopback only."""

    api_keys: tuple[ApiKey, ...] = ()
    admin_token_sha256: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway process is configured with."""

    config_dir: Path = Path("config")
    # listen
    host: str = "127.0.0.1"
    port: int = 8000
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    workers: int = 1  # gateway processes sharing the port (SO_REUSEPORT)
    grpc_port: int | None = None  # the gRPC front door's port (gateway.grpc_api); None: off, 0: any free one
    grpc_max_connection_age_s: float | None = None  # gRPC connections are closed (GOAWAY) after this: clients rebalance
    # defaults
    request_timeout_s: float = 30.0
    max_request_timeout_s: float = 300.0  # cap for the client's x-request-timeout
    runtime_start_timeout_s: float = 60.0
    health_check_timeout_s: float = 1.0
    health_interval_s: float = 2.0
    shutdown_grace_s: float = 2.0  # after SIGTERM: ready is 503, new connections still accepted
    drain_timeout_s: float = 10.0  # then: in-flight requests get this long to finish
    # limits
    max_body_bytes: int = 64 * MIB
    max_inflated_bytes: int = 256 * MIB  # a gzip request body, once decompressed
    max_elements: int = 16 * MIB  # tensor elements in one request
    max_concurrency: int = 1024  # requests in flight across the gateway; beyond it 503
    header_timeout_s: float = 10.0  # a request's headers must arrive within this, else 408 and close
    body_timeout_s: float = 30.0  # its body within this after the headers, else 408
    max_upload_bytes: int = 1024 * MIB  # a model archive sent to `POST /gateway/admin/models`
    upload_timeout_s: float = 600.0  # its body within this (instead of body_timeout_s)
    # resilience
    circuit_failures: int = 5  # consecutive transport failures that open a backend's circuit
    circuit_cooldown_s: float = 5.0  # how long it stays open before one probe call
    retry_attempts: int = 3  # calls per request when the backend is UNAVAILABLE
    dns_refresh_s: float = 30.0  # `dns:` backend targets are re-resolved this often (0: only when a connection breaks)
    backend_client: BackendClient = "inloop"  # plaintext host:port targets over gateway.grpc_client; grpcio: all
    # logging
    log_level: str = "info"
    access_log: bool = True
    # build and reload
    envs_dir: Path = Path(".gateway/envs")  # per-model environments made by `gateway build`
    build_timeout_s: float = 1800.0  # an install-command (of `gateway build` or an upload) runs at most this
    watch_config: bool = False  # reload when a file under the config directory changes
    # shadows (gateway.shadows)
    shadow_queue_size: int = 100  # copies waiting per shadow variant; beyond it one is dropped (counted)
    shadow_concurrency: int = 2  # calls at once per shadow variant
    shadow_log_sample: float = 0.01  # share of disagreements logged (logger gateway.shadow); 0: none
    shadow_queue_bytes: int = 64 << 20  # array bytes a shadow's copies may hold; beyond it one is dropped
    # request logs (gateway.requestlog) and warmup
    request_log_queue_size: int = 1000  # records waiting per sink; beyond it one is dropped (counted)
    request_log_queue_bytes: int = 64 << 20  # array bytes a sink's queue may hold; beyond it one is dropped
    warmup_timeout_s: float = 60.0  # the longest one model version's warmup replay may take
    auth: AuthSettings = field(default_factory=AuthSettings)
    auth_file: Path | None = None  # `auth` read from this file instead (gateway.yaml `auth: {file: ...}`)

    @classmethod
    def load(
        cls,
        config_dir: Path,
        file_values: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Merge the file, the environment and explicit overrides (None values are ignored)."""
        values: dict[str, Any] = {"config_dir": config_dir, **(file_values or {})}
        env = os.environ if env is None else env
        hints = field_types()
        for name, kind in hints.items():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw == "" and type(None) in typing.get_args(kind):  # an optional setting set empty: unset
                continue
            if raw is not None and name not in ("config_dir", "auth"):
                values[name] = convert(name, raw, kind, source=f"{ENV_PREFIX}{name.upper()}")
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Reject values no gateway can run with."""
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, float) and not math.isfinite(value):  # inf and nan compare as no bound can
                raise ConfigError(f"{item.name} must be a finite number, got {value}")
            if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0 \
                    and item.name not in ("port", "grpc_port", "shadow_log_sample", "dns_refresh_s"):
                raise ConfigError(f"{item.name} must be greater than 0, got {value}")
        clients = typing.get_args(BackendClient)
        if self.backend_client not in clients:
            raise ConfigError(f"backend_client must be {' or '.join(clients)}, got {self.backend_client!r}")
        if self.dns_refresh_s < 0:
            raise ConfigError(f"dns_refresh_s must be 0 (off) or more, got {self.dns_refresh_s}")
        if not 0.0 <= self.shadow_log_sample <= 1.0:
            raise ConfigError(f"shadow_log_sample must be between 0.0 and 1.0, got {self.shadow_log_sample}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is not a TCP port")
        if self.grpc_port is not None:
            if not 0 <= self.grpc_port <= 65535:
                raise ConfigError(f"grpc_port {self.grpc_port} is not a TCP port")
            if self.grpc_port == self.port and self.port != 0:
                raise ConfigError(f"grpc_port and port are both {self.port}: the two front doors need a port each")
            if self.grpc_port == 0 and self.workers > 1:
                raise ConfigError("grpc_port 0 (any free port) needs workers: 1: workers share one known port")
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ConfigError("tls_certfile and tls_keyfile go together")


# gateway.yaml sections and the settings each holds.
SECTIONS: dict[str, tuple[str, ...]] = {
    "listen": ("host", "port", "tls_certfile", "tls_keyfile", "workers", "grpc_port", "grpc_max_connection_age_s"),
    "defaults": ("request_timeout_s", "max_request_timeout_s", "runtime_start_timeout_s",
                 "health_check_timeout_s", "health_interval_s", "shutdown_grace_s", "drain_timeout_s"),
    "limits": ("max_body_bytes", "max_inflated_bytes", "max_elements", "max_concurrency",
               "header_timeout_s", "body_timeout_s", "max_upload_bytes", "upload_timeout_s"),
    "resilience": ("circuit_failures", "circuit_cooldown_s", "retry_attempts", "dns_refresh_s", "backend_client"),
    "logging": ("log_level", "access_log"),
    "build": ("envs_dir", "build_timeout_s"),
    "reload": ("watch_config",),
    "shadows": ("shadow_queue_size", "shadow_concurrency", "shadow_log_sample", "shadow_queue_bytes"),
    "request_logs": ("request_log_queue_size", "request_log_queue_bytes", "warmup_timeout_s"),
}


def field_types() -> dict[str, Any]:
    """Each setting's declared type (`Path | None` and the like resolved)."""
    hints = typing.get_type_hints(Settings)
    return {item.name: hints[item.name] for item in fields(Settings)}


def convert(name: str, raw: Any, kind: Any, source: str) -> Any:
    """`raw` (text from the environment, or a YAML value) as a value of type `kind`."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    target = next(option for option in options if option is not type(None))
    if typing.get_origin(target) is Literal:
        return _choice(name, raw, typing.get_args(target), source)
    try:
        if target is bool:
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if target is int and isinstance(raw, bool | float):
            raise ValueError(raw)
        if target is float and isinstance(raw, bool):
            raise ValueError(raw)
        if target in (int, float) or (target is str and not isinstance(raw, dict | list)):
            return target(raw)
        if target is Path and isinstance(raw, str):
            return Path(raw)
        raise ValueError(raw)
    except ValueError:
        names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
                 Path: "a path"}
        raise ConfigError(f"{source}={raw!r}: {name} must be {names.get(target, target)}") from None


def _choice(name: str, raw: Any, choices: tuple[str, ...], source: str) -> str:
    """`raw` when it is one of `choices`."""
    if raw not in choices:
        raise ConfigError(f"{source}={raw!r}: {name} must be one of {', '.join(choices)}")
    return str(raw)
