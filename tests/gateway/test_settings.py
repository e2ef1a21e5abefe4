"""Settings: defaults < gateway.yaml < GATEWAY_* environment < command-line flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import SECTIONS, Settings, convert, field_types


def test_precedence() -> None:
    settings = Settings.load(
        Path("cfg"),
        {"port": 9000, "request_timeout_s": 5.0, "host": "0.0.0.0"},
        env={"GATEWAY_PORT": "9100", "GATEWAY_ACCESS_LOG": "off", "GATEWAY_ENVS_DIR": "/tmp/envs"},
        overrides={"port": 9200, "host": None},
    )
    assert settings.port == 9200
    assert settings.host == "0.0.0.0"
    assert settings.request_timeout_s == 5.0
    assert settings.access_log is False
    assert settings.envs_dir == Path("/tmp/envs")
    assert settings.max_body_bytes == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"GATEWAY_PORT": "http"}, "GATEWAY_PORT='http': port must be an integer"),
        ({"GATEWAY_ACCESS_LOG": "maybe"}, "access_log must be true or false"),
        ({"GATEWAY_MAX_CONCURRENCY": "0"}, "max_concurrency must be greater than 0"),
        ({"GATEWAY_TLS_CERTFILE": "cert.pem"}, "tls_certfile and tls_keyfile go together"),
    ],
)
def test_bad_environment(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        Settings.load(Path("cfg"), env=env)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
@pytest.mark.parametrize("name", ["warmup_timeout_s", "request_timeout_s", "shadow_log_sample"])
def test_a_float_setting_must_be_finite(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(Path("cfg"), env={f"GATEWAY_{name.upper()}": value})
    assert str(caught.value) == f"{name} must be a finite number, got {float(value)}"
    with pytest.raises(ConfigError, match=f"^{name} must be a finite number"):
        Settings.load(Path("cfg"), {name: float(value)})


def test_backend_client() -> None:
    assert Settings().backend_client == "inloop"
    assert Settings.load(Path("cfg"), env={"GATEWAY_BACKEND_CLIENT": "grpcio"}).backend_client == "grpcio"
    assert Settings.load(Path("cfg"), {"backend_client": "grpcio"}, env={}).backend_client == "grpcio"
    with pytest.raises(ConfigError) as caught:
        Settings.load(Path("cfg"), env={"GATEWAY_BACKEND_CLIENT": "h2"})
    assert str(caught.value) == "GATEWAY_BACKEND_CLIENT='h2': backend_client must be one of grpcio, inloop"
    with pytest.raises(ConfigError, match=r"^backend_client must be grpcio or inloop, got 'h2'$"):
        Settings.load(Path("cfg"), env={}, overrides={"backend_client": "h2"})
    assert "backend_client" in SECTIONS["resilience"]
    with pytest.raises(ConfigError, match=r"^resilience\.backend_client=1: backend_client must be one of grpcio"):
        convert("backend_client", 1, field_types()["backend_client"], source="resilience.backend_client")
