"""`GET /gateway/models[/{name}]` on a real uvicorn with the example config's real runtimes, and
a remote model whose contract is not discovered yet."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.settings import ApiKey, AuthSettings, Settings
from tests.conftest import free_port, serve_app
from tests.gateway.test_application_plans import write_remote_model


async def test_every_model_version_is_listed_with_its_state_and_contract(example_config: Config) -> None:
    async with serve_app(create_app(Settings(), example_config)) as url, httpx.AsyncClient(base_url=url) as client:
        listed = (await client.get("/gateway/models")).json()["models"]
        keys = [(m["name"], m["version"]) for m in listed]
        assert keys == sorted(example_config.models)
        increment = next(m for m in listed if m["name"] == "increment_model")
        assert increment == {
            "name": "increment_model", "version": 1, "labels": {}, "kind": "local", "state": "ready",
            "contract": "declared", "signature_name": increment["signature_name"],
            "inputs": [{"name": "number", "dtype": "int32", "shape": [-1]}],
            "outputs": [{"name": "number", "dtype": "int32", "shape": [-1]}],
            "applications": ["canary_app", "increment_app"]}
        one = await client.get("/gateway/models/increment_model")
        assert one.status_code == 200
        assert one.json() == {"name": "increment_model", "versions": [increment]}
        missing = await client.get("/gateway/models/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        assert (await client.delete("/gateway/models")).status_code == 405


async def test_a_remote_model_not_discovered_yet_has_an_unknown_contract(tmp_path: Path) -> None:
    write_remote_model(tmp_path, "far", f"127.0.0.1:{free_port()}", "far")
    settings = Settings(config_dir=tmp_path)
    async with serve_app(create_app(settings, load_config(tmp_path))) as url, httpx.AsyncClient(base_url=url) as client:
        far = (await client.get("/gateway/models")).json()["models"][0]
        assert far["kind"] == "tensorflow-serving"
        assert far["state"] == "not_ready"
        assert far["contract"] == "unknown"
        assert far["inputs"] is None
        assert far["outputs"] is None


async def test_an_api_key_lists_only_the_models_it_may_call(example_config: Config) -> None:
    key = ApiKey(name="k", sha256=hashlib.sha256(b"secret").hexdigest(), applications=("increment_model",))
    settings = Settings(auth=AuthSettings(api_keys=(key,)))
    async with serve_app(create_app(settings, example_config)) as url, httpx.AsyncClient(base_url=url) as client:
        headers = {"Authorization": "Bearer secret"}
        listed = await client.get("/gateway/models", headers=headers)
        assert [m["name"] for m in listed.json()["models"]] == ["increment_model"]
        assert (await client.get("/gateway/models/scaler_model", headers=headers)).status_code == 403
