"""The client and `gateway predict --model` on a TF Serving backend (a real grpc.aio server):
versions and labels, the contract discovered from the backend typing the answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from gateway.app import create_app
from gateway.cli import main
from gateway.client import AsyncClient
from gateway.errors import BackendUnavailable
from gateway.settings import Settings
from tests.conftest import free_port, serve_app
from tests.gateway.test_tfserving_api import BATCH, V1, V2, manual_clock, write_config
from tests.tfserving_server import FakeTFServing


@pytest.fixture
async def url(tfs: FakeTFServing, tmp_path: Path) -> AsyncIterator[str]:
    config = write_config(tmp_path, tfs.target)
    async with serve_app(create_app(Settings(config_dir=tmp_path, access_log=False), config)) as url:
        yield url


async def test_versions_and_labels_with_discovered_contracts(url: str) -> None:
    async with AsyncClient(url) as client:
        stable = await client.predict_model("toy", label="stable", input_1=BATCH)
        assert stable["output_1"].dtype == np.float32
        assert stable["output_1"].tolist() == V1
        second = await client.predict_model("toy", version=2, input_1=np.array(BATCH, np.float32))
        assert second["output_1"].dtype == np.float32
        assert second["output_1"] == pytest.approx(np.array(V2, np.float32))


async def test_gateway_predict_model_at_a_label(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["predict", "--model", "toy@stable", "--json", '{"input_1": [[1, 2], [1, 3]]}', "--url", url]
    assert await asyncio.to_thread(main, argv) == 0
    assert capsys.readouterr().out == '{"output_1":[[8.0],[11.0]]}\n'


async def test_gateway_list_shows_a_model_fronting_every_version_as_star(url: str,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(main, ["list", "--url", url]) == 0
    rows = [line.split()[:6] for line in capsys.readouterr().out.splitlines()]  # less the applications
    assert ["toy", "*", "stable=1", "tensorflow-serving", "ready", "discovered"] in rows  # the config's labels
    assert ["toy_one", "1", "-", "tensorflow-serving", "ready", "declared"] in rows


async def test_a_contract_not_known_yet_is_read_again_once_discovered(tmp_path: Path) -> None:
    port = free_port()
    app = create_app(Settings(config_dir=tmp_path, access_log=False), write_config(tmp_path, f"127.0.0.1:{port}"))
    server = FakeTFServing(typed=True)
    async with serve_app(app) as url, AsyncClient(url, retries=0) as client:
        clock = manual_clock(app)
        with pytest.raises(BackendUnavailable):  # the backend is down: its contract is not known yet
            await client.predict("toy_v1", input_1=np.array(BATCH, np.float32))
        server.port = port
        await server.start()
        try:
            for _ in range(50):  # until the gateway's discovery, past its back-off, reaches the backend
                clock.advance(30)
                try:
                    answer = await client.predict("toy_v1", input_1=BATCH)
                    break
                except BackendUnavailable:
                    await asyncio.sleep(0.1)
            assert answer["output_1"].dtype == np.float32  # the discovered contract types the answer
            assert answer["output_1"].tolist() == V1
        finally:
            await server.stop()
