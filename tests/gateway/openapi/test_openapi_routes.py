"""`GET /openapi.json`, `/openapi.yaml`, `/openapi-3.0.json` on a real uvicorn serving the example
config with its real runtimes: every documented example answers 200 with a body of the documented
schema, errors have the error schema, the document follows the presented key and the registry."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from gateway.app import create_app
from gateway.manifests import Config, load_config
from gateway.openapi import document_for_config
from gateway.routes.openapi import PERMISSION_SETS, DocumentCache
from gateway.settings import ApiKey, AuthSettings, Settings
from tensorcodecs import Signature, TensorSpec, lookup_dtype
from tensorcodecs.signature_def import CLASSIFY_METHOD
from tests.conftest import CONFIG_DIR, free_port, logs_under, runtimes_for, serve_app, write_app
from tests.gateway.openapi.documents import answer_validator, check_31, operations, resolved, schema_validator
from tests.gateway.test_application_plans import write_remote_model
from tests.tfserving_server import FakeTFServing, Servable, _toy

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
        for method in ("POST", "PUT", "DELETE", "TRACE"):  # GET and HEAD only
            refused = await client.request(method, "/openapi.yaml")
            assert refused.status_code == 405, (method, refused.status_code)
            assert "GET" in refused.headers["allow"]
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
        app = create_app(settings, config)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
            before = (await client.get("/openapi.json")).json()
            assert "/gateway/applications/twice_app" not in before["paths"]
            assert (await client.get("/openapi.json")).json() == before
            assert app.state.openapi.builds == 1  # the second from the cache
            write_app(config_dir, "twice_app", "increment_model:1")
            reloaded = await client.post("/admin/reload")
            assert reloaded.status_code == 200, reloaded.text
            after = (await client.get("/openapi.json")).json()
            assert app.state.openapi.builds == 2
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
        first = await cache.rendering(dataplane, None, "json")
        made = time.perf_counter() - started
        started = time.perf_counter()
        again = await cache.rendering(dataplane, None, "json")
        cached = time.perf_counter() - started
        assert again is first
        assert cache.builds == 1
        assert made < 1.0  # the example config's document: ~20 ms to make
        assert cached < made / 10
        dataplane.registry.refresh_applications()  # what a discovered contract does
        assert await cache.rendering(dataplane, None, "json") is not first
        assert cache.builds == 2
        # Callers arriving while it is made share the one making, each rendering and its gzip too.
        dataplane.registry.refresh_applications()
        answers = await asyncio.gather(*(cache.rendering(dataplane, None, kind, gzipped)
                                         for kind in ("json", "yaml", "json30") for gzipped in (False, True) * 4))
        assert cache.builds == 5  # one document per rendering: only the bytes are kept
        assert len({id(answer) for answer in answers}) == 6
        assert gzip.decompress(answers[1]) == answers[0]
        # Served: the cached gzip bytes when the client accepts gzip (browsers and Swagger UI do).
        for encoding in ("identity", "gzip"):
            timings = []
            for _ in range(5):
                started = time.perf_counter()
                response = await client.get("/openapi.json", headers={"accept-encoding": encoding})
                timings.append(time.perf_counter() - started)
                assert response.status_code == 200
                assert response.json()["openapi"] == "3.1.0"
            assert sorted(timings)[2] < 0.25
            assert response.headers.get("content-encoding") == (None if encoding == "identity" else "gzip")
        assert "accept-encoding" in response.headers["vary"].lower()
        assert app.state.openapi.builds == 1
        raw = await client.get("/openapi.yaml", headers={"accept-encoding": "gzip"})
        assert yaml.safe_load(raw.text) == response.json()


async def test_keys_with_the_same_permissions_share_one_rendering_and_the_cache_stays_bounded(
        example_config: Config) -> None:
    everything = [_key(f"all{n}", f"all-secret-{n}", "*") for n in range(40)]
    increment = [_key(f"inc{n}", f"inc-secret-{n}", "increment_model", "increment_app") for n in range(40)]
    apart = [_key(f"one{n}", f"one-secret-{n}", f"app_{n}") for n in range(PERMISSION_SETS + 8)]
    settings = Settings(auth=AuthSettings(api_keys=(*everything, *increment, *apart)))
    app = create_app(settings, example_config)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        answers = await asyncio.gather(*(client.get("/openapi.json", headers={"x-api-key": f"all-secret-{n}"})
                                         for n in range(40)))
        assert {answer.content for answer in answers} == {answers[0].content}
        cache: DocumentCache = app.state.openapi
        assert cache.builds == 1
        for n in range(40):
            answer = await client.get("/openapi.json", headers={"Authorization": f"Bearer inc-secret-{n}"})
            assert _served(answer.json()) == {"increment_app", "increment_model"}
        assert cache.builds == 2
        assert cache.entries() == 2
        for n in range(PERMISSION_SETS + 8):
            answer = await client.get("/openapi.json", headers={"x-api-key": f"one-secret-{n}"})
            assert _served(answer.json()) == set()
        assert cache.entries() == PERMISSION_SETS  # the least recently used sets dropped
        assert cache.builds == 2 + PERMISSION_SETS + 8


async def test_documents_that_follow_the_key_say_so_to_caches(example_config: Config) -> None:
    keyed = Settings(auth=AuthSettings(api_keys=(_key("inc", "inc-secret", "increment_app"),)))
    for settings, private in ((Settings(), False), (keyed, True)):
        async with serve_app(create_app(settings, example_config)) as url, httpx.AsyncClient(base_url=url) as client:
            for path in ("/openapi.json", "/openapi.yaml", "/openapi-3.0.json"):
                for encoding in ("gzip", "identity", "gzip;q=0", "br;q=1, gzip;q=0"):
                    answer = await client.get(path, headers={"accept-encoding": encoding, "x-api-key": "inc-secret"})
                    assert answer.status_code == 200
                    assert answer.headers.get("content-encoding") == ("gzip" if encoding == "gzip" else None)
                    varies = [name.strip().lower() for name in answer.headers["vary"].split(",")]
                    assert varies == (["accept-encoding", "authorization", "x-api-key"] if private
                                      else ["accept-encoding"])
                    assert answer.headers.get("cache-control") == ("private, no-cache" if private else None)


def _scorer() -> Servable:
    """A TF Serving model whose default signature is a Classify one (a serialized tf.Example in)."""
    signature = Signature("serving_default", {"inputs": TensorSpec("inputs", lookup_dtype("string"), (-1,))},
                          {"scores": TensorSpec("scores", lookup_dtype("float32"), (-1, 2))}, CLASSIFY_METHOD)
    return Servable({"serving_default": (signature, lambda x: {})})


async def test_classify_and_regress_are_documented_where_a_signature_takes_them(
        example_config: Config, tmp_path: Path) -> None:
    local = document_for_config(example_config, Settings())
    assert not [path for path in local["paths"] if path.endswith((":classify", ":regress"))]  # Predict's only
    server = FakeTFServing(repository={"Toy": {1: _toy(1)}, "Scorer": {1: _scorer()}})
    await server.start()
    try:
        write_remote_model(tmp_path, "toy", server.target, "Toy")
        write_remote_model(tmp_path, "scorer", server.target, "Scorer")
        async with serve_app(create_app(Settings(config_dir=tmp_path), load_config(tmp_path))) as url, \
                httpx.AsyncClient(base_url=url) as client:
            document = (await client.get("/openapi.json")).json()
            check_31(document)
            paths = set(document["paths"])
            assert "/v1/models/scorer:classify" in paths
            assert not {"/v1/models/scorer:regress", "/v1/models/toy:classify", "/v1/models/toy:regress"} & paths
            operation = document["paths"]["/v1/models/scorer:classify"]["post"]
            assert "`serving_default`" in operation["description"]
            answer = await client.post("/v1/models/scorer:classify", json={"examples": [{"x": [1.0, 2.0]}]})
            assert answer.status_code == 200, answer.text
            answer_validator(document, "/v1/models/scorer:classify", "post", 200).validate(answer.json())
            assert set(operation["responses"]["200"]["headers"]) <= set(answer.headers)
    finally:
        await server.stop()


async def test_the_documented_raw_tensor_path_answers_as_documented(example_config: Config) -> None:
    async with serve_app(create_app(Settings(), example_config)) as url, httpx.AsyncClient(base_url=url) as client:
        document = (await client.get("/openapi.json")).json()
        path = "/gateway/applications/increment_app"
        operation = document["paths"][path]["post"]
        raw = operation["requestBody"]["content"]["application/octet-stream"]["schema"]
        assert "N x 4 bytes" in raw["description"]  # int32: what the gateway checks, said
        documented = {parameter["name"]: parameter for parameter in operation["parameters"] if "name" in parameter}
        sent = {"x-tensor-name": "number", "x-tensor-dtype": "int32", "x-tensor-shape": "3"}
        for name, value in sent.items():
            schema_validator(document, documented[name]["schema"]).validate(value)
        answer = await client.post(path, content=np.array([1, 2, 3], "<i4").tobytes(),
                                   headers={"content-type": "application/octet-stream", **sent})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/octet-stream"
        assert np.frombuffer(answer.content, "<i4").tolist() == [2, 3, 4]
        headers = operation["responses"]["200"]["headers"]
        assert {"x-tensor-name", "x-tensor-dtype", "x-tensor-shape", "x-request-id"} <= set(headers) <= set(
            answer.headers)
        assert "application/octet-stream" in operation["responses"]["200"]["content"]
        refused = await client.post(path, content=b"\x00" * 5, headers={"content-type": "application/octet-stream"})
        assert refused.status_code == 400
        answer_validator(document, path, "post", 400).validate(refused.json())


async def test_refusals_have_their_documented_status_and_body(example_config: Config, tmp_path: Path) -> None:
    async with serve_app(create_app(Settings(), example_config)) as url, httpx.AsyncClient(base_url=url) as client:
        document = (await client.get("/openapi.json")).json()
        path = "/gateway/applications/increment_app"
        forced = await client.post(path, json={"number": [1]}, headers={"x-gateway-variant": "increment_model:1"})
        assert forced.status_code == 403  # the application does not allow forcing a variant
        answer_validator(document, path, "post", 403).validate(forced.json())
        reloaded = await client.post("/admin/reload")  # no config directory to read: refused
        assert str(reloaded.status_code) in document["paths"]["/admin/reload"]["post"]["responses"]
        answer_validator(document, "/admin/reload", "post", reloaded.status_code).validate(reloaded.json())
        for get in (path for path, _ in operations(document, "get") if "{" not in path and path != "/docs"):
            response = await client.get(get)  # every documented GET answers its 200 (/docs: gateway/routes/docs.py)
            assert response.status_code == 200, (get, response.text)
            if response.headers.get("content-type", "").startswith("application/json"):  # /v2/health: empty
                answer_validator(document, get, "get", 200).validate(response.json())
    admin = Settings(auth=AuthSettings(admin_token_sha256=(hashlib.sha256(b"adm").hexdigest(),)))
    async with serve_app(create_app(admin, example_config)) as url, httpx.AsyncClient(base_url=url) as client:
        document = (await client.get("/openapi.json")).json()
        for headers in ({}, {"authorization": "Bearer wrong"}):
            refused = await client.post("/admin/reload", headers=headers)
            assert refused.status_code == 401
            answer_validator(document, "/admin/reload", "post", 401).validate(refused.json())
        forced = await client.post("/gateway/applications/increment_app", json={"number": [1]},
                                   headers={"x-gateway-variant": "increment_model:1"})
        assert forced.status_code == 403
        answer_validator(document, "/gateway/applications/increment_app", "post", 403).validate(forced.json())


async def test_a_remote_model_s_unknown_version_and_down_backend_answer_as_documented(
        tfs: FakeTFServing, tmp_path: Path) -> None:
    write_remote_model(tmp_path, "toy", tfs.target, "Toy")
    write_remote_model(tmp_path, "far", f"127.0.0.1:{free_port()}", "Far",
                       "version: 1\ncontract:\n  inputs:\n    x: {shape: [-1], type: float32}\n"
                       "  outputs:\n    y: {shape: [-1], type: float32}\n")
    async with serve_app(create_app(Settings(config_dir=tmp_path), load_config(tmp_path))) as url, \
            httpx.AsyncClient(base_url=url) as client:
        document = (await client.get("/openapi.json")).json()
        floating = "/gateway/models/toy/versions/{version}"
        missing = await client.post("/gateway/models/toy/versions/9", json={"input_1": [[1.0, 2.0]]})
        assert missing.status_code == 404, missing.text
        answer_validator(document, floating, "post", 404).validate(missing.json())
        tf_missing = await client.post("/v1/models/toy/versions/9:predict", json={"instances": [[1.0, 2.0]]})
        assert tf_missing.status_code == 404
        answer_validator(document, "/v1/models/toy/versions/{version}:predict", "post", 404).validate(
            tf_missing.json())
        down = await client.post("/gateway/models/far", json={"x": [1.0]})
        assert down.status_code == 503, down.text
        answer_validator(document, "/gateway/models/far", "post", 503).validate(down.json())
        documented = resolved(document, document["paths"]["/gateway/models/far"]["post"]["responses"]["503"])
        assert "Retry-After" in documented["headers"]
        assert int(down.headers["retry-after"]) >= 0


async def test_a_key_s_document_holds_no_schema_of_what_it_may_not_call(example_config: Config) -> None:
    keys = (_key("inc", "inc-secret", "increment_app", "increment_model"), _key("all", "all-secret", "*"))
    settings = Settings(auth=AuthSettings(api_keys=keys))
    async with serve_app(create_app(settings, example_config)) as url, httpx.AsyncClient(base_url=url) as client:
        inc = (await client.get("/openapi.json", headers={"x-api-key": "inc-secret"})).json()
        everything = (await client.get("/openapi.json", headers={"x-api-key": "all-secret"})).json()
        anonymous = (await client.get("/openapi.json")).json()
    def contract_components(document: dict[str, Any]) -> set[str]:
        return {name.split(".")[1] for name in document["components"]["schemas"]
                if name.startswith(("app.", "model.", "tfserving."))}
    assert contract_components(inc) == {"increment_app", "increment_model"}
    assert contract_components(anonymous) == set()
    assert contract_components(everything) == set(example_config.applications) | {
        name for name, _ in example_config.models}
    assert everything == document_for_config(example_config, settings)  # a key that may call everything


def _odd_names_config(tmp_path: Path) -> Path:
    """Models and applications whose names carry `.`, `-` and `_`, one allowing forced variants."""
    config = tmp_path / "config"
    for name in ("inc.model-1", "inc_twin"):
        shutil.copytree(CONFIG_DIR / "models" / "increment_model", config / "models" / name)
        serving = config / "models" / name / "serving.yaml"
        serving.write_text(serving.read_text().replace('name: "increment_model"', f'name: "{name}"', 1))
    write_app(config, "a.b-c_d", "inc.model-1:1", "allow_variant_override: true")
    write_app(config, "a_b", "inc_twin:1")
    return config


async def test_live_and_offline_documents_agree_with_keys_overrides_and_odd_names(tmp_path: Path) -> None:
    config_dir = _odd_names_config(tmp_path)
    keys = (_key("all", "all-secret", "*"),)
    settings = Settings(config_dir=config_dir, auth=AuthSettings(
        api_keys=keys, admin_token_sha256=(hashlib.sha256(b"adm").hexdigest(),)))
    with runtimes_for(logs_under(load_config(config_dir), tmp_path / "logs")) as config:
        async with serve_app(create_app(settings, config)) as url, httpx.AsyncClient(base_url=url) as client:
            live = (await client.get("/openapi.json", headers={"x-api-key": "all-secret"})).json()
            check_31(live)
            assert live == document_for_config(config, settings)
            assert "/gateway/applications/a.b-c_d" in live["paths"]
            operation = live["paths"]["/gateway/applications/a.b-c_d"]["post"]
            assert operation["operationId"] == "predict_a_0b_1c_d"
            answer = await client.post("/gateway/applications/a.b-c_d", headers={"x-api-key": "all-secret"},
                                       json=operation["requestBody"]["content"]["application/json"]["example"])
            assert answer.status_code == 200, answer.text
            answer_validator(live, "/gateway/applications/a.b-c_d", "post", 200).validate(answer.json())
