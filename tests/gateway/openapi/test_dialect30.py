"""The OpenAPI 3.1 -> 3.0 conversion: documents of every dtype and shape, and a hand-made
document using each 3.1 construct, are valid 3.0 afterwards, and the converted schemas accept
the same values."""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS30Validator, OAS31Validator
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

from gateway.openapi.dialect30 import to_openapi_30
from gateway.openapi.schemas import (
    GENERIC_REQUEST,
    GENERIC_RESPONSE,
    GENERIC_TFSERVING_REQUEST,
    GENERIC_TFSERVING_RESPONSE,
    Schema,
    native_example,
    native_request_schema,
    native_response_schema,
    tfserving_examples,
    tfserving_request_forms,
    tfserving_request_schema,
    tfserving_response_forms,
    tfserving_response_schema,
)
from tensorcodecs import DType, TensorSpec, lookup_dtype
from tensorcodecs.contract import Shape
from tensorcodecs.dtypes import TABLE

SHAPES: list[Shape | None] = [(), (3,), (-1,), (-1, 2), (2, -1, 3), None]


def _operation(request: Schema, examples: dict[str, Any], response: Schema) -> Schema:
    return {"requestBody": {"required": True, "content": {"application/json": {
                "schema": request, "examples": {name: {"value": value} for name, value in examples.items()}}}},
            "responses": {"200": {"description": "the answer", "content": {"application/json": {"schema": response}}},
                          "400": {"description": "a request the contract refuses"}}}


def _document(paths: dict[str, Schema]) -> Schema:
    return {"openapi": "3.1.0", "info": {"title": "contracts", "version": "1"}, "paths": paths}


@functools.cache
def _contract_document(row: DType) -> Schema:
    """One native and one TF Serving route per dtype, an input and an output per shape."""
    specs = {f"x{i}": TensorSpec(f"x{i}", row, shape) for i, shape in enumerate(SHAPES)}
    columns = {name: spec for name, spec in specs.items() if spec.shape != ()}  # scalars have no rows
    return _document({
        f"/applications/{row.name}": {"post": _operation(
            native_request_schema(specs), {"native": native_example(specs)}, native_response_schema(specs))},
        f"/v1/models/{row.name}:predict": {"post": _operation(
            tfserving_request_schema(columns), tfserving_examples(columns), tfserving_response_schema(columns))},
        f"/v1/models/{row.name}_scalar:predict": {"post": _operation(
            tfserving_request_schema(specs), tfserving_examples(specs), tfserving_response_schema(specs))},
        "/generic": {"post": _operation(GENERIC_REQUEST, {}, GENERIC_RESPONSE)},
        "/v1/models/generic:predict": {"post": _operation(GENERIC_TFSERVING_REQUEST, {}, GENERIC_TFSERVING_RESPONSE)},
    })


def _media_types(document: Schema) -> list[Schema]:
    found = []
    for item in document["paths"].values():
        operation = item["post"]
        found.extend(operation["requestBody"]["content"].values())
        for response in operation["responses"].values():
            found.extend(response.get("content", {}).values())
    return found


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_contract_documents_are_valid_31_and_30(row: DType) -> None:
    document = _contract_document(row)
    before = copy.deepcopy(document)
    validate(document, cls=OpenAPIV31SpecValidator)
    converted = to_openapi_30(document)
    assert document == before  # the input is not changed
    assert converted["openapi"] == "3.0.3"
    validate(converted, cls=OpenAPIV30SpecValidator)
    # The examples are still valid for the converted schemas.
    for media in _media_types(converted):
        for example in media.get("examples", {}).values():
            OAS30Validator(media["schema"]).validate(example["value"])


_VALUES = st.recursive(
    st.one_of(st.integers(-(2**65), 2**65), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
              st.none(), st.text(max_size=3), st.builds(lambda t: {"b64": t}, st.sampled_from(["QQ==", "QQ", "!"]))),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["x0", "x1", "x2", "x5", "b64"]),
                                                                 inner, max_size=3),
    max_leaves=8)


@settings(max_examples=120, deadline=None)
@given(row=st.sampled_from(TABLE), value=_VALUES, form=st.sampled_from(["native", "inputs", "instances"]))
def test_converted_schemas_accept_the_same_values(row: DType, value: Any, form: str) -> None:
    document = _contract_document(row)
    converted = _converted(row)
    path = f"/applications/{row.name}" if form == "native" else f"/v1/models/{row.name}:predict"
    body = value if form == "native" else {form: value}
    for original, rewritten in zip(_media_types(_only(document, path)), _media_types(_only(converted, path)),
                                   strict=True):
        assert OAS31Validator(original["schema"]).is_valid(body) == OAS30Validator(rewritten["schema"]).is_valid(body)


@functools.cache
def _converted(row: DType) -> Schema:
    return to_openapi_30(_contract_document(row))


def _only(document: Schema, path: str) -> Schema:
    return {**document, "paths": {path: document["paths"][path]}}


# ---------------------------------------------------------------- each 3.1 construct


_THING = "#/components/schemas/Thing"


def _hand_made() -> Schema:
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {"title": "every construct", "summary": "3.1 only", "version": "1",
                 "license": {"name": "Apache 2.0", "identifier": "Apache-2.0"}},
        "webhooks": {"ping": {"post": {"responses": {"200": {"description": "ok"}}}}},
        "security": [{"mtls": []}, {"key": []}],
        "paths": {
            "/things": {"post": {
                "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                "responses": {
                    "200": {"description": "ok", "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/Thing", "description": "a ref with siblings"}}}},
                    "4XX": {"description": "error", "content": {"application/json": {"schema": {
                        "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "urn:error",
                        "$comment": "dropped", "type": "object", "properties": {"error": {"type": "string"}}}}}},
                },
                "security": [{"mtls": []}],
            }},
            "/shared": {"$ref": "#/components/pathItems/shared", "summary": "a shared item"},
            "/raw": {"get": {"parameters": [{"name": "n", "in": "query", "schema": {
                "type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 10, "examples": [5]}}]}},
        },
        "components": {
            "securitySchemes": {"mtls": {"type": "mutualTLS"},
                                "key": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "pathItems": {"shared": {"get": {"responses": {"200": {"description": "ok"}}}}},
            "schemas": {
                "Thing": {
                    "type": "object",
                    "$defs": {"Leaf": {"type": ["string", "null"]}, "Tree": {
                        "anyOf": [{"$ref": f"{_THING}/$defs/Leaf"},
                                  {"type": "array", "items": {"$ref": f"{_THING}/$defs/Tree"}}]}},
                    "properties": {
                        "nullable": {"type": ["number", "null"], "minimum": 1, "exclusiveMinimum": 0},
                        "several": {"type": ["integer", "string"]},
                        "nothing": {"type": "null"},
                        "constant": {"const": "fixed"},
                        "flag": {"const": False},
                        "maybe": {"oneOf": [{"$ref": f"{_THING}/$defs/Leaf"}, {"type": "null"}]},
                        "pair": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "string"}],
                                 "items": False},
                        "head": {"type": "array", "prefixItems": [{"type": "number"}], "items": {"type": "boolean"}},
                        "any": True,
                        "never": False,
                        "raw": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"},
                        "tree": {"$ref": f"{_THING}/$defs/Tree"},
                        "cond": {"if": {"type": "string"}, "then": {"minLength": 1}, "else": {"type": "number"}},
                        "map": {"type": "object", "patternProperties": {"^x": {"type": "integer"}},
                                "propertyNames": {"maxLength": 3}, "dependentRequired": {"a": ["b"]},
                                "unevaluatedProperties": False},
                        "list": {"type": "array", "contains": {"type": "integer"}, "minContains": 1},
                        "bounded": {"type": "number", "exclusiveMaximum": 5, "maximum": 3},
                    },
                    "examples": [{"constant": "fixed"}],
                },
            },
        },
    }


def test_a_document_with_every_31_construct_converts_to_valid_30() -> None:
    document = _hand_made()
    validate(document, cls=OpenAPIV31SpecValidator)
    before = copy.deepcopy(document)
    converted = to_openapi_30(document)
    assert document == before
    validate(converted, cls=OpenAPIV30SpecValidator)
    text = json.dumps(converted)
    for gone in ("jsonSchemaDialect", "webhooks", "pathItems", "$schema", "$id", "$comment", "$defs", "prefixItems",
                 "const", "mutualTLS", "identifier", "contentEncoding", "patternProperties", "if"):
        assert f'"{gone}"' not in text, gone

    thing = converted["components"]["schemas"]["Thing"]
    props = thing["properties"]
    assert props["nullable"] == {"type": "number", "nullable": True, "minimum": 1}  # the stricter bound kept
    assert props["several"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert props["nothing"] == {"nullable": True, "enum": [None]}
    assert props["constant"] == {"type": "string", "enum": ["fixed"]}  # generators want an enum's type
    assert props["flag"] == {"type": "boolean", "enum": [False]}
    assert props["maybe"] == {"oneOf": [{"$ref": "#/components/schemas/Leaf"}, {"nullable": True, "enum": [None]}]}
    assert props["pair"] == {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "string"}]},
                             "maxItems": 2}
    assert props["head"]["items"] == {"anyOf": [{"type": "number"}, {"type": "boolean"}]}
    assert props["any"] == {}
    assert props["never"] == {"not": {}}
    assert props["raw"] == {"type": "string", "format": "byte"}
    assert props["tree"] == {"$ref": "#/components/schemas/Tree"}
    assert props["bounded"] == {"type": "number", "maximum": 3}
    assert thing["example"] == {"constant": "fixed"}
    schemas = converted["components"]["schemas"]
    assert schemas["Leaf"] == {"type": "string", "nullable": True}
    assert schemas["Tree"]["anyOf"][0] == {"$ref": "#/components/schemas/Leaf"}
    assert schemas["Tree"]["anyOf"][1]["items"] == {"$ref": "#/components/schemas/Tree"}

    answer = converted["paths"]["/things"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"description": "a ref with siblings", "allOf": [{"$ref": "#/components/schemas/Thing"}]}
    query = converted["paths"]["/raw"]["get"]["parameters"][0]["schema"]
    assert query == {"type": "integer", "minimum": 0, "exclusiveMinimum": True, "maximum": 10,
                     "exclusiveMaximum": True, "example": 5}
    assert converted["paths"]["/raw"]["get"]["responses"]  # 3.0 requires them
    assert converted["paths"]["/shared"] == {"summary": "a shared item",
                                             "get": {"responses": {"200": {"description": "ok"}}}}
    assert converted["security"] == [{"key": []}]
    assert "security" not in converted["paths"]["/things"]["post"]  # only mTLS: the document's apply
    assert set(converted["components"]["securitySchemes"]) == {"key"}
    assert converted["info"] == {"title": "every construct", "version": "1", "license": {"name": "Apache 2.0"}}


def test_hoisted_defs_do_not_replace_components() -> None:
    box = {"$defs": {"Leaf": {"type": "string"}}, "properties": {"v": {"$ref": "#/components/schemas/Box/$defs/Leaf"}}}
    document = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {},
                "components": {"schemas": {"Leaf": {"type": "integer"}, "Box": box}}}
    validate(document, cls=OpenAPIV31SpecValidator)
    converted = to_openapi_30(document)
    validate(converted, cls=OpenAPIV30SpecValidator)
    schemas = converted["components"]["schemas"]
    assert schemas["Leaf"] == {"type": "integer"}
    assert schemas["Box"]["properties"]["v"] == {"$ref": "#/components/schemas/Leaf2"}
    assert schemas["Leaf2"] == {"type": "string"}


def test_the_output_shares_nothing_with_the_input() -> None:
    document = _hand_made()
    converted = to_openapi_30(document)
    inputs = {id(node) for node in _nodes(document)}
    assert not any(id(node) in inputs for node in _nodes(converted))


def _nodes(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [value, *(n for v in value.values() for n in _nodes(v))]
    if isinstance(value, list):
        return [value, *(n for v in value for n in _nodes(v))]
    return []


# ---------------------------------------------------------------- client generators

_BIN = Path(sys.executable).parent


def _generator_document() -> Schema:
    """Native and TF Serving routes of a few contracts, each TF Serving form a component (as a
    document does for generators, which take unions of `$ref`s better than of inline objects)."""
    contracts = {
        "increment": {"number": TensorSpec("number", lookup_dtype("int32"), (-1,))},
        "scaler": {"features": TensorSpec("features", lookup_dtype("float32"), (-1, 3)),
                   "unit": TensorSpec("unit", lookup_dtype("string"), ())},
        "anything": {"text": TensorSpec("text", lookup_dtype("bytes"), None),
                     "pairs": TensorSpec("pairs", lookup_dtype("complex64"), None)},
    }
    schemas: dict[str, Schema] = {}
    paths: dict[str, Schema] = {}

    def component(name: str, schema: Schema) -> Schema:
        schemas[name] = schema
        return {"$ref": f"#/components/schemas/{name}"}

    def forms(name: str, found: dict[str, Schema]) -> Schema:
        refs = [component(f"{name}_{form}", schema) for form, schema in found.items()]
        return refs[0] if len(refs) == 1 else component(name, {"oneOf": refs})

    for name, specs in contracts.items():
        paths[f"/applications/{name}"] = {"post": {"operationId": f"{name}_app", **_operation(
            component(f"{name}_request", native_request_schema(specs)), {},
            component(f"{name}_response", native_response_schema(specs)))}}
        paths[f"/v1/models/{name}:predict"] = {"post": {"operationId": f"{name}_predict", **_operation(
            forms(f"{name}_tf_request", tfserving_request_forms(specs)), {},
            forms(f"{name}_tf_response", tfserving_response_forms(specs)))}}
    for name in ("unknown", "remote"):  # two models whose contracts are not known yet
        paths[f"/v1/models/{name}:predict"] = {"post": {"operationId": f"{name}_predict", **_operation(
            component(f"{name}_tf_request", GENERIC_TFSERVING_REQUEST), {},
            component(f"{name}_tf_response", GENERIC_TFSERVING_RESPONSE))}}
        paths[f"/models/{name}"] = {"post": {"operationId": f"{name}_model", **_operation(
            component(f"{name}_request", GENERIC_REQUEST), {}, component(f"{name}_response", GENERIC_RESPONSE))}}
    return {**_document(paths), "components": {"schemas": schemas}}


@pytest.mark.parametrize("dialect", ["3.1", "3.0"])
def test_a_client_generator_takes_the_schemas_without_a_warning(dialect: str, tmp_path: Path) -> None:
    document = _generator_document()
    if dialect == "3.0":
        document = to_openapi_30(document)
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    environment = {**os.environ, "PATH": f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    generated = subprocess.run(
        [str(_BIN / "openapi-python-client"), "generate", "--path", "openapi.json", "--output-path", "client",
         "--meta", "none", "--fail-on-warning"], cwd=tmp_path, env=environment, capture_output=True, text=True,
        timeout=120, check=False)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert (tmp_path / "client" / "api").is_dir()


_THING_VALUES = st.dictionaries(
    st.sampled_from(["nullable", "several", "nothing", "constant", "flag", "maybe", "pair", "head", "any", "raw",
                     "tree", "bounded", "list"]),
    # No integral floats: 3.1's `integer` takes `1.0` (JSON Schema 2020-12), 3.0's does not, and the
    # gateway's decoders refuse it for integer dtypes, so 3.0 being stricter there is the truth.
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 12),
                           st.floats(-1, 6).filter(lambda x: not x.is_integer()), st.text(max_size=2),
                           st.just("fixed")), lambda inner: st.lists(inner, max_size=3), max_leaves=6),
    max_size=4)


@settings(max_examples=120, deadline=None)
@given(value=_THING_VALUES)
def test_the_conversion_loosens_and_never_tightens(value: dict[str, Any]) -> None:
    document = _hand_made()
    converted = to_openapi_30(document)
    original = OAS31Validator({**document, "$ref": _THING})
    rewritten = OAS30Validator({**converted, "$ref": _THING})
    if original.is_valid(value):
        assert rewritten.is_valid(value), value
