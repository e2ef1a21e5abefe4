"""The OpenAPI document of the live registry and of a config: valid OpenAPI 3.1 (and 3.0 once
converted), the same offline as live when every contract is declared, typed by discovered
contracts, generic for those not known yet, the error codes of the one error tree, security
schemes when keys or admin tokens are configured."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import hypothesis
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.client import errors as client_errors
from gateway.errors import BACKEND_ERRORS, GatewayError
from gateway.manifests import Config, load_config
from gateway.openapi import document as document_module
from gateway.openapi import document_for_config, live_document, to_openapi_30
from gateway.openapi.catalog import AppEntry, Catalog, ModelEntry
from gateway.openapi.document import build_document
from gateway.openapi.responses import CODES_BY_STATUS, ERROR_CODES, status_name
from gateway.settings import ApiKey, AuthSettings, Settings
from tensorcodecs import Signature, TensorSpec, lookup_dtype
from tests.conftest import CONFIG_DIR, free_port, serve_app
from tests.gateway.openapi.documents import check_30, check_31, operations, resolved
from tests.gateway.test_application_plans import write_remote_model
from tests.tfserving_server import FakeTFServing


def _all_operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [operation for item in document["paths"].values() for operation in item.values()]


async def test_the_live_document_is_the_config_s_when_every_contract_is_declared(example_config: Config) -> None:
    settings = Settings()
    app = create_app(settings, example_config)
    async with serve_app(app):
        live = live_document(app.state.dataplane, settings, None)
    offline = document_for_config(load_config(CONFIG_DIR), settings)
    assert live == offline
    check_31(live)
    check_30(to_openapi_30(live))
    assert live["openapi"] == "3.1.0"
    assert live["jsonSchemaDialect"] == "https://spec.openapis.org/oas/3.1/dialect/base"
    assert live["servers"] == [{"url": ".", "description": "this gateway (where this document was read)"}]
    assert "/docs" in live["info"]["description"]
    ids = [operation["operationId"] for operation in _all_operations(live)]
    assert len(ids) == len(set(ids))
    assert {"predict_increment_app", "model_predict_increment_model__v1", "tfserving_predict_increment_model",
            "list_applications", "list_models", "health_ready", "admin_reload"} <= set(ids)
    assert all(operation["tags"] for operation in _all_operations(live))
    assert "securitySchemes" not in live["components"]
    assert not any("security" in operation for operation in _all_operations(live))


def test_each_application_and_model_version_is_typed_by_its_contract() -> None:
    document = document_for_config(load_config(CONFIG_DIR), Settings())
    scaler = document["paths"]["/gateway/applications/scaler_app"]["post"]
    request = resolved(document, scaler["requestBody"]["content"]["application/json"]["schema"])
    assert request["required"] == ["features", "unit"]
    assert request["additionalProperties"] is False
    assert "application/octet-stream" not in scaler["requestBody"]["content"]  # two inputs: JSON only
    increment = document["paths"]["/gateway/applications/increment_app"]["post"]
    assert "application/octet-stream" in increment["requestBody"]["content"]
    names = {parameter.get("name") for parameter in increment["parameters"]}
    assert {"x-tensor-name", "x-tensor-dtype", "x-tensor-shape"} <= names
    assert "x-gateway-variant" not in names  # the application does not allow it
    answer = increment["responses"]["200"]
    assert {"x-request-id", "x-gateway-variants", "server-timing"} <= set(answer["headers"])
    assert set(increment["responses"]) >= {"200", "400", "404", "408", "413", "415", "429", "500", "502", "503",
                                           "504"}
    assert "499" not in increment["responses"]
    assert "401" not in increment["responses"]  # no keys configured
    assert "Retry-After" in resolved(document, increment["responses"]["503"])["headers"]
    model = document["paths"]["/gateway/models/increment_numpy/versions/1"]["post"]
    assert "x-model-spec" in model["responses"]["200"]["headers"]
    tf = document["paths"]["/v1/models/increment_model:predict"]["post"]
    assert set(tf["requestBody"]["content"]["application/json"]["examples"]) == {"row", "columnar"}
    union = resolved(document, tf["requestBody"]["content"]["application/json"]["schema"])
    assert union["oneOf"] == [{"$ref": "#/components/schemas/tfserving.increment_model.1.row_request"},
                              {"$ref": "#/components/schemas/tfserving.increment_model.1.columnar_request"}]
    answers = resolved(document, tf["responses"]["200"]["content"]["application/json"]["schema"])
    assert [form["$ref"].rsplit(".", 1)[1] for form in answers["oneOf"]] == ["row_response", "columnar_response"]
    # A scalar output leaves no rows to answer: TF Serving refuses row requests, so only the columnar form.
    celsius = document["paths"]["/v1/models/celsius_model:predict"]["post"]["requestBody"]["content"][
        "application/json"]
    assert "inputs" in resolved(document, celsius["schema"])["required"]
    assert set(celsius["examples"]) == {"columnar"}
    assert "NaN" not in tf["responses"]["200"]["description"]  # int32 out: always finite
    kelvin = document["paths"]["/v1/models/kelvin_model:predict"]["post"]["responses"]["200"]["description"]
    assert "bare `NaN`, `Infinity` or `-Infinity`" in kelvin
    tf_error = resolved(document, tf["responses"]["400"])
    assert tf_error["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TFServingError"}
    get = document["paths"]["/gateway/applications/increment_app"]["get"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ApplicationPlan"}
    assert "text/plain" in document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert document["paths"]["/admin/reload"]["post"]["tags"] == ["admin"]
    assert "text/html" in document["paths"]["/docs"]["get"]["responses"]["200"]["content"]


def test_the_error_codes_are_those_of_the_error_tree() -> None:
    document = document_for_config(load_config(CONFIG_DIR), Settings())
    codes = document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    assert codes == list(ERROR_CODES)
    todo: list[type[GatewayError]] = [GatewayError]
    while todo:
        kind = todo.pop()
        todo.extend(kind.__subclasses__())
        if kind.status != 499 and kind.__module__ == "gateway.errors":  # the client's own: no answer's
            assert kind.code in codes
            assert kind.code in CODES_BY_STATUS[kind.status]
            assert status_name(kind.status) in document["components"]["responses"]
    predict = document["paths"]["/gateway/models/increment_model"]["post"]["responses"]
    assert {str(kind.status) for kind in BACKEND_ERRORS.values()} - {"401", "403", "499"} <= set(predict)
    assert "client_closed_request" not in codes  # 499: nobody reads it
    # The client's classes join the tree once imported, and no answer carries their codes.
    assert client_errors.UnexpectedAnswer.code not in codes


def test_keys_and_admin_tokens_add_security_schemes_and_their_refusals(tmp_path: Path) -> None:
    key = ApiKey(name="k", sha256=hashlib.sha256(b"k").hexdigest())
    auth = AuthSettings(api_keys=(key,), admin_token_sha256=(hashlib.sha256(b"t").hexdigest(),))
    document = document_for_config(load_config(CONFIG_DIR), Settings(auth=auth))
    check_31(document)
    check_30(to_openapi_30(document))
    schemes = document["components"]["securitySchemes"]
    assert schemes["ApiKeyBearer"]["scheme"] == "bearer"
    assert schemes["ApiKeyHeader"] == {**schemes["ApiKeyHeader"], "type": "apiKey", "in": "header",
                                       "name": "x-api-key"}
    assert schemes["AdminToken"]["type"] == "http"
    for path, operation in operations(document):
        if path.startswith(("/gateway/applications/", "/v1/models/")):
            assert operation["security"] == [{"ApiKeyBearer": []}, {"ApiKeyHeader": []}]
            assert {"401", "403"} <= set(operation["responses"])
    assert document["paths"]["/gateway/admin/models/{name}/reload-config"]["post"]["security"] == [
        {"AdminToken": []}]
    # Only the statuses each route gives (gateway/auth.py): listings filter, they refuse no key they know.
    for listing in ("/gateway/applications", "/gateway/models"):
        assert {"401"} <= set(document["paths"][listing]["get"]["responses"])
        assert "403" not in document["paths"][listing]["get"]["responses"]
    assert "403" in document["paths"]["/gateway/applications/increment_app"]["get"]["responses"]
    assert "WWW-Authenticate" in resolved(document, document["paths"]["/gateway/models"]["get"]["responses"][
        "401"])["headers"]
    reload_config = document["paths"]["/gateway/admin/models/{name}/reload-config"]["post"]["responses"]
    for admin in (document["paths"]["/admin/reload"]["post"]["responses"], reload_config):
        assert "401" in admin  # a token, or none: check_admin answers 401, never 403
    assert "403" not in document["paths"]["/admin/reload"]["post"]["responses"]
    tf_late = resolved(document, document["paths"]["/v1/models/increment_model:predict"]["post"]["responses"]["408"])
    assert tf_late["content"]["application/json"]["schema"]["oneOf"] == [
        {"$ref": "#/components/schemas/TFServingError"}, {"$ref": "#/components/schemas/Error"}]
    tokens_only = document_for_config(load_config(CONFIG_DIR), Settings(auth=AuthSettings(
        admin_token_sha256=auth.admin_token_sha256)))
    assert set(tokens_only["components"]["securitySchemes"]) == {"AdminToken"}
    open_admin = document_for_config(load_config(CONFIG_DIR), Settings())
    assert "401" not in open_admin["paths"]["/admin/reload"]["post"]["responses"]
    assert "403" in open_admin["paths"]["/admin/reload"]["post"]["responses"]  # loopback clients only
    server = open_admin["paths"]["/gateway/admin/models/{name}/reload-config"]["post"]["responses"]
    for status in ("401", "403", "499"):  # the server's own UNAUTHENTICATED, PERMISSION_DENIED, CANCELLED
        assert "ReloadConfigAnswer" in str(server[status]["content"]["application/json"]["schema"])
    assert "security" not in tokens_only["paths"]["/gateway/applications/increment_app"]["post"]


def _with_variant_override(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    for folder in ("increment_model", "increment_numpy"):
        shutil.copytree(CONFIG_DIR / "models" / folder, config / "models" / folder)
    (config / "applications").mkdir()
    (config / "applications" / "ab.yaml").write_text(
        "kind: Application\nname: ab\nallow_variant_override: true\npipeline:\n"
        "  - - model: increment_model:1\n      weight: 50\n    - model: increment_numpy:2\n      weight: 50\n")
    return config


def test_an_application_that_allows_forcing_a_variant_documents_the_header(tmp_path: Path) -> None:
    document = document_for_config(load_config(_with_variant_override(tmp_path)), Settings())
    check_31(document)
    parameters = document["paths"]["/gateway/applications/ab"]["post"]["parameters"]
    variant = next(p for p in parameters if p.get("name") == "x-gateway-variant")
    assert variant["schema"]["examples"] == ["increment_model:1", "increment_numpy:2"]
    assert "403" in document["paths"]["/gateway/applications/ab"]["post"]["responses"]


async def test_a_discovered_contract_types_a_remote_model_and_one_not_discovered_is_generic(
        tfs: FakeTFServing, tmp_path: Path) -> None:
    write_remote_model(tmp_path, "toy", tfs.target, "Toy")
    write_remote_model(tmp_path, "far", f"127.0.0.1:{free_port()}", "far")
    settings = Settings(config_dir=tmp_path)
    config = load_config(tmp_path)
    app = create_app(settings, config)
    async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
        document = (await client.get("/openapi.json")).json()
    check_31(document)
    check_30(to_openapi_30(document))
    toy = document["paths"]["/gateway/models/toy"]["post"]
    request = resolved(document, toy["requestBody"]["content"]["application/json"]["schema"])
    assert request["required"] == ["input_1"]
    assert "not known yet" not in toy.get("description", "")
    assert "/gateway/models/toy/versions/{version}" in document["paths"]  # floating: every version it serves
    assert set(document["paths"]["/v1/models/toy:predict"]["post"]["requestBody"]["content"][
        "application/json"]["examples"]) == {"row", "columnar"}
    far = document["paths"]["/gateway/models/far"]["post"]
    assert "not known yet" in far["description"]
    generic = resolved(document, far["requestBody"]["content"]["application/json"]["schema"])
    assert "properties" not in generic or not generic.get("required")
    assert "not known yet" in document["paths"]["/v1/models/far:predict"]["post"]["description"]
    offline = document_for_config(config, settings)  # neither contract declared: both generic offline
    assert "not known yet" in offline["paths"]["/gateway/models/toy"]["post"]["description"]
    assert offline["paths"]["/gateway/models/far"] == document["paths"]["/gateway/models/far"]


async def test_a_contract_discovered_later_is_in_the_next_document(tmp_path: Path) -> None:
    server = FakeTFServing()
    loading = server.loaded.pop("Toy")  # NOT_FOUND, as TF Serving while it loads a model
    await server.start()
    try:
        write_remote_model(tmp_path, "toy", server.target, "Toy")
        app = create_app(Settings(config_dir=tmp_path), load_config(tmp_path))
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url) as client:
            before = (await client.get("/openapi.json")).json()
            assert "not known yet" in before["paths"]["/gateway/models/toy"]["post"]["description"]
            server.loaded["Toy"] = loading
            await app.state.dataplane.discover(5.0)
            after = (await client.get("/openapi.json")).json()
            toy = after["paths"]["/gateway/models/toy"]["post"]
            assert "not known yet" not in toy.get("description", "")
            assert resolved(after, toy["requestBody"]["content"]["application/json"]["schema"])["required"] == [
                "input_1"]
    finally:
        await server.stop()


def test_a_remote_model_with_a_declared_contract_is_typed_offline(tmp_path: Path) -> None:
    write_remote_model(tmp_path, "declared", f"127.0.0.1:{free_port()}", "Toy",
                       "version: 1\ncontract:\n  inputs:\n    x: {shape: [-1, 2], type: float32}\n"
                       "  outputs:\n    y: {shape: [-1, 1], type: float32}\n")
    document = document_for_config(load_config(tmp_path), Settings())
    check_31(document)
    operation = document["paths"]["/gateway/models/declared/versions/1"]["post"]
    assert "not known yet" not in operation.get("description", "")
    request = resolved(document, operation["requestBody"]["content"]["application/json"]["schema"])
    assert request["required"] == ["x"]
    assert request["properties"]["x"]["items"]["minItems"] == 2
    assert "/gateway/models/declared/versions/{version}" not in document["paths"]  # pinned: its version only


def _ids_and_components(catalog: Catalog) -> tuple[dict[tuple[str, str], str], set[str]]:
    document = build_document(catalog)
    ids = {(path, method): operation["operationId"] for path, item in document["paths"].items()
           for method, operation in item.items()}
    assert len(set(ids.values())) == len(ids)
    return ids, set(document["components"]["schemas"])


def _entry(name: str, version: int, *labels: str) -> ModelEntry:
    signature = Signature("serving_default", {"x": TensorSpec("x", lookup_dtype("int32"), (-1,))},
                          {"y": TensorSpec("y", lookup_dtype("int32"), (-1,))})
    return ModelEntry(name, version, signature, "declared", "local", labels)


def test_operation_ids_and_component_names_depend_on_the_route_alone() -> None:
    app = AppEntry("m_v1", Signature("m_v1", {"x": TensorSpec("x", lookup_dtype("int32"), (-1,))}, {}))
    models = (_entry("a.b", 1), _entry("a_b", 1, "x.y", "_x"), _entry("m", 1), _entry("m_v1", 1), _entry("m", 2))
    ids, components = _ids_and_components(Catalog((app,), models))
    check_31(build_document(Catalog((app,), models)))
    assert ids[("/gateway/models/a.b", "post")] == "model_predict_a_0b"
    assert ids[("/gateway/models/a_b", "post")] == "model_predict_a_b"
    assert ids[("/gateway/models/m/versions/1", "post")] == "model_predict_m__v1"
    assert ids[("/gateway/models/m_v1", "post")] == "model_predict_m_v1"
    assert ids[("/gateway/models/a_b/labels/_x", "post")] == "model_predict_a_b__label___2x"
    assert ids[("/v1/models/a.b:predict", "post")] == "tfserving_predict_a_0b"
    assert ids[("/gateway/applications/m_v1", "post")] == "predict_m_v1"
    # More applications and models, sorted before and between them, rename nothing already there.
    more_apps = (AppEntry("model_m", None), app, AppEntry("a-b", None))
    more_models = (_entry("a-b", 1), *models[:2], _entry("a_b_v1", 1), *models[2:], _entry("model_m", 1))
    more_ids, more_components = _ids_and_components(Catalog(more_apps, tuple(
        sorted(more_models, key=lambda m: (m.name, m.version)))))
    assert more_ids.items() >= ids.items()
    assert more_components >= components
    assert more_ids[("/gateway/models/a-b", "post")] == "model_predict_a_1b"
    assert more_ids[("/gateway/applications/model_m", "post")] == "predict_model_m"


def _unescaped(text: str) -> str:
    """The name `_escaped` wrote (its inverse, for the test)."""
    out, index = [], 0
    while index < len(text):
        if text[index] == "_" and text[index + 1:index + 2].isdigit():
            code = text[index + 1]
            if code == "3":
                out.append(chr(int(text[index + 2:index + 8], 16)))
                index += 8
                continue
            out.append({"0": ".", "1": "-", "2": "_"}[code])
            index += 2
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


@hypothesis.given(st.lists(st.text(alphabet="ab_.-1Zé", min_size=1, max_size=8), min_size=1, max_size=3))
def test_operation_ids_read_back_to_their_names(parts: list[str]) -> None:
    operation_id = document_module._id("model_predict", *parts)
    assert re.fullmatch(r"[A-Za-z0-9_]+", operation_id)
    assert operation_id.startswith("model_predict_")
    assert [_unescaped(part) for part in operation_id.removeprefix("model_predict_").split("__")] == parts


def test_no_operation_id_kind_begins_another() -> None:
    kinds = document_module.ID_KINDS
    assert not [(a, b) for a in kinds for b in kinds if a != b and b.startswith(a + "_")]
