"""Auth read from a separate file (a Kubernetes Secret mounted as one): gateway.yaml
`auth: {file: ...}`, GATEWAY_AUTH_FILE, `gateway serve --auth-file`; errors say file:line."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import httpx
import pytest

from gateway.errors import ConfigError
from gateway.manifests import load_config, with_auth_file
from gateway.settings import ApiKey, AuthSettings, Settings
from tests.e2e.processes import running_gateway

REPO = Path(__file__).resolve().parents[2]
KEY = "s3cret-client-key"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


AUTH_YAML = f"""api_keys:
  - name: team-a
    sha256: {sha(KEY)}
    applications: [increment_app]
admin_token_sha256: [{sha("admin")}]
"""


def settings_of(config_dir: Path, env: dict[str, str] | None = None,
                overrides: dict[str, object] | None = None) -> Settings:
    config = load_config(config_dir)
    return with_auth_file(Settings.load(config_dir, config.gateway.values, env=env or {}, overrides=overrides))


def config_with(tmp_path: Path, gateway_yaml: str) -> Path:
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    (config / "gateway.yaml").write_text(gateway_yaml)
    return config


def test_gateway_yaml_names_a_file_relative_to_the_config_directory(tmp_path: Path) -> None:
    config = config_with(tmp_path, "kind: Gateway\nauth: {file: ../secrets/auth.yaml}\n")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "auth.yaml").write_text(AUTH_YAML)
    settings = settings_of(config)
    assert settings.auth == AuthSettings((ApiKey("team-a", sha(KEY), ("increment_app",)),), (sha("admin"),))


def test_environment_and_flag_name_the_file_the_flag_first(tmp_path: Path) -> None:
    config = config_with(tmp_path, "kind: Gateway\n")
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(AUTH_YAML)
    second.write_text(f"admin_token_sha256: [{sha('other')}]\n")
    by_env = settings_of(config, env={"GATEWAY_AUTH_FILE": str(first)})
    assert [key.name for key in by_env.auth.api_keys] == ["team-a"]
    by_flag = settings_of(config, env={"GATEWAY_AUTH_FILE": str(first)}, overrides={"auth_file": second})
    assert by_flag.auth == AuthSettings((), (sha("other"),))


def test_no_file_keeps_the_inline_section(tmp_path: Path) -> None:
    config = config_with(tmp_path, f"kind: Gateway\nauth: {{admin_token_sha256: [{sha('x')}]}}\n")
    assert settings_of(config).auth.admin_token_sha256 == (sha("x"),)


@pytest.mark.parametrize(("gateway_yaml", "auth_yaml", "words"), [
    (f"kind: Gateway\nauth: {{file: ../a.yaml, admin_token_sha256: [{sha('x')}]}}\n", AUTH_YAML,
     "gateway.yaml:2: auth.admin_token_sha256: unknown field"),
    ("kind: Gateway\nauth: {file: ../missing.yaml}\n", None, "cannot read the auth file"),
    ("kind: Gateway\nauth: {file: ../a.yaml}\n", "   \n", "a.yaml: the auth file is empty"),
    ("kind: Gateway\nauth: {file: ../a.yaml}\n", "api_keys:\n  - name: k\n    sha256: abc\n",
     "a.yaml:3: api_keys[0].sha256: must be the 64 hex digits"),
    ("kind: Gateway\nauth: {file: ../a.yaml}\n", "api_key: []\n", "a.yaml:1: api_key: unknown field"),
    ("kind: Gateway\nauth: {file: ../a.yaml}\n", AUTH_YAML + "---\n" + AUTH_YAML, "a.yaml:7: the auth file holds one"),
])
def test_mistakes_are_named(tmp_path: Path, gateway_yaml: str, auth_yaml: str | None, words: str) -> None:
    config = config_with(tmp_path, gateway_yaml)
    if auth_yaml is not None:
        (tmp_path / "a.yaml").write_text(auth_yaml)
    with pytest.raises(ConfigError) as raised:
        settings_of(config)
    assert words in str(raised.value)


def test_keys_in_both_places_are_refused(tmp_path: Path) -> None:
    config = config_with(tmp_path, f"kind: Gateway\nauth: {{admin_token_sha256: [{sha('x')}]}}\n")
    (tmp_path / "a.yaml").write_text(AUTH_YAML)
    with pytest.raises(ConfigError, match=r"both in gateway\.yaml and in the auth file"):
        settings_of(config, env={"GATEWAY_AUTH_FILE": str(tmp_path / "a.yaml")})


def test_a_served_gateway_takes_its_keys_from_the_file(tmp_path: Path) -> None:
    config = config_with(tmp_path, "kind: Gateway\nlogging: {access_log: false}\n")
    (tmp_path / "auth.yaml").write_text(AUTH_YAML)
    with running_gateway(config, "--auth-file", str(tmp_path / "auth.yaml")) as (_, url):
        path = f"{url}/gateway/applications/increment_app"
        assert httpx.post(path, json={"number": [1]}).status_code == 401
        answer = httpx.post(path, json={"number": [1]}, headers={"x-api-key": KEY})
        assert answer.status_code == 200
        assert answer.json() == {"number": [2]}
