"""`GET /openapi.json`, `/openapi.yaml`, `/openapi-3.0.json` on a real uvicorn serving the example
config with its real runtimes: every documented example answers 200 with a body of the documented
schema, errors have the error schema, the document follows the presented key and the registry."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.routes.openapi import DocumentCache
from gateway.settings import ApiKey, AuthSettings, Settings
from tests.conftest import CONFIG_DIR, logs_under, runtimes_for, serve_app, write_app
from tests.gateway.openapi.documents import answer_validator, check_31, operations

PREDICT_PREFIXES = ("/gateway/applications/", "/gateway/models/", "/v1/models/")


def _bodies(operation: dict[str, Any]) -> list[Any]:
    """The documented JSON examples of an operation's request body."""
    content = operation["requestBody"]["content"].get("application/json", {})
    if "example" in content:
        return [content["example"]]
    return [example["value"] for example in content.get("examples", {}).values()]


async def test_every_documented_example_answers_200_with_the_documented_body(example_config: Config) -> None:
    async with serve_app(create_app(Settings(), example_config)) as url, \
            httpx.AsyncClient(base_url=url, timeout=30) as client:
        answer = await client.get("/openapi.json")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        document = answer.json()
        check_31(document)
        tried = []
        for path, operation in operations(document):
            if not path.startswith(PREDICT_PREFIXES) or "{" in path:
                continue
            for body in _bodies(operation):
                response = await client.post(path, json=body)
                assert response.status_code == 200, (path, body, response.text)
                answer_validator(document, path, "post", 200).validate(response.json())
                tried.append(path)
        assert "/gateway/applications/increment_app" in tried
        assert "/gateway/applications/pipeline_app" in tried
        assert "/gateway/models/increment_numpy/versions/2" in tried
        assert "/v1/models/scaler_model:predict" in tried
        # every native route and TF Serving predict route has an example the gateway takes
        routes = {path for path, _ in operations(document) if "{" not in path
                  and (path.startswith(PREDICT_PREFIXES[:2]) or path.endswith(":predict"))}
        assert routes == set(tried)


async def test_error_answers_have_the_documented_error_bodies(example_config: Config) -> None:
    async with serve_app(create_app(Settings(), example_config)) as url, httpx.AsyncClient(base_url=url) as client:
        document = (await client.get("/openapi.json")).json()
        native = await client.post("/gateway/applications/increment_app", json={"number": "x"})
        assert native.status_code == 400
        answer_validator(document, "/gateway/applications/increment_app", "post", 400).validate(native.json())
        assert native.json()["error"]["code"] == "contract_violation"
        wrong_type = await client.post("/gateway/models/increment_model", content=b"{}",
                                       headers={"content-type": "text/csv"})
        assert wrong_type.status_code == 415
        answer_validator(document, "/gateway/models/increment_model", "post", 415).validate(wrong_type.json())
        tf = await client.post("/v1/models/increment_model:predict", json={"instances": [["x"]]})
        assert tf.status_code == 400
        answer_validator(document, "/v1/models/increment_model:predict", "post", 400).validate(tf.json())
        assert isinstance(tf.json()["error"], str)
        for path, status in (("/health/live", 200), ("/gateway/applications", 200), ("/gateway/models", 200),
                             ("/gateway/applications/scaler_app", 200), ("/gateway/models/increment_numpy", 200),
                             ("/v1/models/increment_model", 200), ("/v1/models/increment_model/metadata", 200)):
            response = await client.get(path)
            assert response.status_code == status, (path, response.text)
            answer_validator(document, path, "get", status).validate(response.json())
        ready = await client.get("/health/ready")
        answer_validator(document, "/health/ready", "get", ready.status_code).validate(ready.json())


async def test_the_yaml_and_the_3_0_documents_are_the_same_document(example_config: Config) -> None:
    async with serve_app(create_app(Settings(), example_config)) as url, httpx.AsyncClient(base_url=url) as client:
        document = (await client.get("/openapi.json")).json()
        as_yaml = await client.get("/openapi.yaml")
        assert as_yaml.status_code == 200
        assert as_yaml.headers["content-type"] == "application/yaml"
        assert "&id" not in as_yaml.text  # no YAML aliases: every part written out
        assert yaml.safe_load(as_yaml.text) == document
        assert list(yaml.safe_load(as_yaml.text)) == list(document)  # the key order kept
        head = await client.head("/openapi.json")
        assert head.status_code == 200
        assert head.content == b""
        older = await client.get("/openapi-3.0.json")
        assert older.status_code == 200
        assert older.json()["openapi"].startswith("3.0.")
        assert set(older.json()["paths"]) == set(document["paths"])


def _key(name: str, secret: str, *allowed: str) -> ApiKey:
    return ApiKey(name=name, sha256=hashlib.sha256(secret.encode()).hexdigest(), applications=allowed)


def _served(document: dict[str, Any]) -> set[str]:
    """The applications and models a document lists predict routes for."""
    names = set()
    for path in document["paths"]:
        for prefix in PREDICT_PREFIXES:
            if path.startswith(prefix):
                names.add(path.removeprefix(prefix).split("/")[0].split(":")[0])
    return names


async def test_the_document_lists_what_the_presented_key_may_call(example_config: Config) -> None:
    keys = (_key("inc", "inc-secret", "increment_app", "increment_model"), _key("all", "all-secret", "*"))
    settings = Settings(auth=AuthSettings(api_keys=keys, admin_token_sha256=(hashlib.sha256(b"adm").hexdigest(),)))
    async with serve_app(create_app(settings, example_config)) as url, httpx.AsyncClient(base_url=url) as client:
        anonymous = await client.get("/openapi.json")
        assert anonymous.status_code == 200  # open, but listing nothing to call
        assert _served(anonymous.json()) == set()
        assert {"/gateway/applications", "/gateway/models", "/health/ready", "/metrics"} <= set(
            anonymous.json()["paths"])
        unknown = await client.get("/openapi.json", headers={"Authorization": "Bearer nope"})
        assert _served(unknown.json()) == set()
        bearer = (await client.get("/openapi.json", headers={"Authorization": "Bearer inc-secret"})).json()
        assert _served(bearer) == {"increment_app", "increment_model"}
        header = (await client.get("/openapi.yaml", headers={"x-api-key": "inc-secret"})).text
        assert yaml.safe_load(header) == bearer
        everything = (await client.get("/openapi.json", headers={"x-api-key": "all-secret"})).json()
        assert _served(everything) == set(example_config.applications) | {name for name, _ in example_config.models}
        check_31(everything)
        schemes = everything["components"]["securitySchemes"]
        assert schemes["ApiKeyBearer"] == {"type": "http", "scheme": "bearer", "description": schemes[
            "ApiKeyBearer"]["description"]}
        assert schemes["ApiKeyHeader"]["in"] == "header"
        assert schemes["ApiKeyHeader"]["name"] == "x-api-key"
        predict = everything["paths"]["/gateway/applications/increment_app"]["post"]
        assert predict["security"] == [{"ApiKeyBearer": []}, {"ApiKeyHeader": []}]
        assert {"401", "403"} <= set(predict["responses"])
        assert everything["paths"]["/admin/reload"]["post"]["security"] == [{"AdminToken": []}]
        assert "security" not in everything["paths"]["/health/ready"]["get"]
        refused = await client.post("/gateway/applications/increment_app", json={"number": [1]})
        assert refused.status_code == 401
        answer_validator(everything, "/gateway/applications/increment_app", "post", 401).validate(refused.json())
        called = await client.post("/gateway/applications/increment_app", json=predict["requestBody"]["content"][
            "application/json"]["example"], headers={"x-api-key": "inc-secret"})
        assert called.status_code == 200


async def test_a_reload_that_adds_an_application_regenerates_the_document(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config_dir)
    settings = Settings(config_dir=config_dir)
    with runtimes_for(logs_under(load_config(config_dir), tmp_path / "logs")) as config:
        async with serve_app(create_app(settings, config)) as url, \
                httpx.AsyncClient(base_url=url, timeout=60) as client:
            before = (await client.get("/openapi.json")).json()
            assert "/gateway/applications/twice_app" not in before["paths"]
            assert (await client.get("/openapi.json")).json() == before  # the same, from the cache
            write_app(config_dir, "twice_app", "increment_model:1")
            reloaded = await client.post("/admin/reload")
            assert reloaded.status_code == 200, reloaded.text
            after = (await client.get("/openapi.json")).json()
            operation = after["paths"]["/gateway/applications/twice_app"]["post"]
            assert operation["operationId"] == "predict_twice_app"
            body = operation["requestBody"]["content"]["application/json"]["example"]
            answer = await client.post("/gateway/applications/twice_app", json=body)
            assert answer.status_code == 200
            answer_validator(after, "/gateway/applications/twice_app", "post", 200).validate(answer.json())
            assert "twice_app" in (await client.get("/openapi.yaml")).text
            assert "/gateway/applications/twice_app" in (await client.get("/openapi-3.0.json")).json()["paths"]


async def test_a_rendering_is_made_once_per_registry_state_and_served_fast(example_config: Config) -> None:
    app = create_app(Settings(), example_config)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        await client.get("/health/live")
        dataplane = app.state.dataplane
        cache = DocumentCache(app.state.settings)
        started = time.perf_counter()
        first = cache.rendering(dataplane, None, "json")
        made = time.perf_counter() - started
        started = time.perf_counter()
        again = cache.rendering(dataplane, None, "json")
        cached = time.perf_counter() - started
        assert again is first
        assert made < 1.0  # the example config's document: a few milliseconds to make
        assert cached < made / 10
        dataplane.registry.refresh_applications()  # what a discovered contract does
        assert cache.rendering(dataplane, None, "json") is not first
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            response = await client.get("/openapi.json", headers={"accept-encoding": "identity"})
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200
        assert sorted(timings)[2] < 0.25
