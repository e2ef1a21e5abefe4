"""Reading an OpenAPI document in tests: its operations, and a JSON Schema validator for a
documented body (references resolved within the document)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

Document = dict[str, Any]
URI = "urn:gateway:openapi"


def check_31(document: Document) -> None:
    OpenAPIV31SpecValidator(document).validate()


def check_30(document: Document) -> None:
    OpenAPIV30SpecValidator(document).validate()


def pointer(*parts: str) -> str:
    return "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def resolved(document: Document, item: Document) -> Document:
    """`item`, or what its `$ref` (within the document) names."""
    while "$ref" in item:
        node: Any = document
        for part in item["$ref"].removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        item = node
    return item


def operations(document: Document, method: str = "post") -> Iterator[tuple[str, Document]]:
    for path, item in document["paths"].items():
        if method in item:
            yield path, item[method]


def answer_validator(document: Document, path: str, method: str, status: int,
                     media: str = "application/json") -> Draft202012Validator:
    """A validator for the body the document says `method path` answers with `status`."""
    response = resolved(document, document["paths"][path][method]["responses"][str(status)])
    return schema_validator(document, response["content"][media]["schema"])


def schema_validator(document: Document, schema: Document) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(URI, DRAFT202012.create_resource(document))
    return Draft202012Validator(_absolute(schema), registry=registry)


def _absolute(node: Any) -> Any:
    """An inline schema with its document-relative references made absolute."""
    if isinstance(node, dict):
        return {key: URI + value if key == "$ref" and isinstance(value, str) and value.startswith("#") else
                _absolute(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_absolute(value) for value in node]
    return node
