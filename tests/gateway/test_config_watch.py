"""The reload triggers of `gateway serve` (gateway/serving/config_watch.py): a change under the
config directory reloads the served app, once per change and not for compiled Python; reloads
asked for before the gateway serves are logged and ignored."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.manifests import load_config
from gateway.serving.config_watch import ReloadTrigger, snapshot, watch_config
from gateway.settings import Settings
from tests.conftest import free_port, serve_app, write_app
from tests.waiting import eventually


def _config(root: Path) -> Settings:
    (root / "models").mkdir(parents=True)
    (root / "models" / "toy.yaml").write_text(
        f"kind: Model\nname: toy\nbackend: {{protocol: tensorflow-serving, target: 127.0.0.1:{free_port()}}}\n")
    write_app(root, "app", "toy")
    return Settings(config_dir=root, access_log=False)


async def test_a_change_under_the_config_directory_reloads_the_app_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    settings = _config(tmp_path / "config")
    app = create_app(settings, load_config(settings.config_dir))
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        trigger = ReloadTrigger(lambda: app.state.reloader)
        watching = asyncio.create_task(watch_config(settings.config_dir, trigger, interval_s=0.02))
        await asyncio.sleep(0)  # the watcher runs up to its first wait: it has seen the directory as it was
        try:
            # Written outside and moved in whole: the watcher (every 20 ms) sees one change, not two.
            write_app(tmp_path / "staging", "added", "toy")
            os.replace(tmp_path / "staging" / "applications" / "added.yaml",
                       settings.config_dir / "applications" / "added.yaml")

            async def served() -> bool:
                return "added" in (await client.get("/health/ready")).json()["applications"]

            async def finished() -> bool:
                return not trigger.tasks
            await eventually(served, what="the added application served")
            await eventually(finished, what="the reload finished")
            assert caplog.text.count("config directory changed; reloading") == 1
            assert "reloaded: 2 applications, 1 models" in caplog.text
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching


async def test_a_reload_asked_for_before_the_gateway_serves_is_logged_and_ignored(
        caplog: pytest.LogCaptureFixture) -> None:
    trigger = ReloadTrigger(lambda: None)
    trigger.trigger()
    await asyncio.gather(*trigger.tasks)
    assert "reload asked for before the gateway started serving; ignored" in caplog.text
    trigger.abandon()  # nothing to abandon: no error


def test_the_snapshot_has_every_file_but_compiled_python(tmp_path: Path) -> None:
    (tmp_path / "models" / "m" / "__pycache__").mkdir(parents=True)
    (tmp_path / "models" / "m" / "serving.yaml").write_text("kind: Model\n")
    (tmp_path / "models" / "m" / "__pycache__" / "func_main.pyc").write_bytes(b"\0")
    (tmp_path / "gateway.yaml").write_text("kind: Gateway\n")
    assert sorted(snapshot(tmp_path)) == [str(tmp_path / "gateway.yaml"),
                                          str(tmp_path / "models" / "m" / "serving.yaml")]
    before = snapshot(tmp_path)
    (tmp_path / "gateway.yaml").write_text("kind: Gateway\nlogging: {}\n")
    assert snapshot(tmp_path) != before
