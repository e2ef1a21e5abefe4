"""`gateway check --url` and `gateway logs replay` take the gateway and its API key from
GATEWAY_URL / GATEWAY_API_KEY as `predict` and `list` do (real uvicorn, real runtimes)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.cli import main
from gateway.manifests import Config
from gateway.settings import ApiKey, AuthSettings, Settings
from tests.conftest import CONFIG_DIR, serve_app
from tests.gateway.requestlog.log_files import call, write_log

KEY = "flags-key"


@pytest.fixture
async def url(example_config: Config) -> AsyncIterator[str]:
    auth = AuthSettings(api_keys=(ApiKey("flags", hashlib.sha256(KEY.encode()).hexdigest()),))
    async with serve_app(create_app(Settings(auth=auth, access_log=False), example_config)) as url:
        yield url


async def test_check_url_alone_compares_with_gateway_url(url: str, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GATEWAY_URL", url)
    monkeypatch.setenv("GATEWAY_API_KEY", KEY)
    assert await asyncio.to_thread(main, ["check", "--config", str(CONFIG_DIR), "--url"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"no changes against {url}" in out
    assert out[-1].startswith("note: only the applications the API key may call")  # the key was sent
    assert await asyncio.to_thread(main, ["check", "--config", str(CONFIG_DIR)]) == 0  # offline without --url
    assert "against" not in capsys.readouterr().out


async def test_logs_replay_defaults_to_gateway_url_and_key(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GATEWAY_URL", url)
    monkeypatch.setenv("GATEWAY_API_KEY", KEY)
    assert await asyncio.to_thread(main, ["logs", "replay", str(write_log(tmp_path, [call("req-1")]))]) == 0
    assert f"sent 1 request(s) to {url}: 1 answered 2xx, 0 failed" in capsys.readouterr().out
