"""An OpenAPI 3.1 document rewritten as OpenAPI 3.0.3, for API gateways and client generators
that stop at 3.0.

3.1's Schema Objects are JSON Schema 2020-12; 3.0's are an older, smaller dialect. Each construct
3.0 lacks is rewritten to its nearest 3.0 form (`_SCHEMA_REWRITES`); those 3.0 cannot say at all
are dropped, loosening the schema (never tightening it):

| 3.1 | 3.0 |
|---|---|
| `type: [t, "null"]` | `type: t`, `nullable: true` (several types: `anyOf` of one per type) |
| `const: x` | `enum: [x]`, typed by `x` |
| `examples: [a, ...]` | `example: a` |
| `prefixItems: [s1, s2]` | `items: {anyOf: [s1, s2]}` (and `maxItems` when no more items are allowed) |
| `exclusiveMinimum: n` (a number) | `minimum: n`, `exclusiveMinimum: true` |
| `true` / `false` schemas | `{}` / `{not: {}}` |
| `$defs` | moved into `components.schemas`, their `$ref`s rewritten |
| `$ref` with sibling keywords | `allOf: [{$ref}]` next to the siblings |
| `contentEncoding: base64` | `format: byte` |
| the keywords in `_DROPPED_KEYWORDS` (`$schema`, `$id`, `if`/`then`/`else`, `patternProperties`...) | dropped |

Outside schemas: `jsonSchemaDialect`, `webhooks`, `components.pathItems` (written in place of
the path items that refer to them), `info.summary`,
`info.license.identifier` and `mutualTLS` security schemes (with the requirements naming them; a
`security` list naming nothing else is dropped, so the document's requirements apply) are
dropped; `paths` and every operation's `responses` are added when absent (3.0 requires them).
A `$ref` to a `$defs` entry is written as JSON pointer from the document's root
(`#/components/schemas/Thing/$defs/Leaf`), or `#/$defs/Leaf` inside a schema with an `$id`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T")
Schema = dict[str, Any]

OPENAPI_30 = "3.0.3"

_DROPPED_KEYWORDS = frozenset({
    "$schema", "$id", "$anchor", "$dynamicAnchor", "$dynamicRef", "$comment", "$vocabulary",
    "contentMediaType", "contentSchema", "if", "then", "else", "dependentRequired", "dependentSchemas",
    "unevaluatedItems", "unevaluatedProperties", "contains", "minContains", "maxContains",
    "propertyNames", "patternProperties",
})
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_VALUES = ("not", "items", "additionalProperties")
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_DEFS_PREFIX = "#/$defs/"
_PATH_ITEMS = "#/components/pathItems/"


def to_openapi_30(document: Schema) -> Schema:
    """A new document: `document` (OpenAPI 3.1) in OpenAPI 3.0.3 (the input is not changed)."""
    converter = _Converter(document)
    out = converter.document()
    if converter.hoisted:
        schemas = out.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(converter.hoisted)
    return out


class _Converter:
    """One conversion: walks the document's structure to its Schema Objects and rewrites them,
    collecting the `$defs` it moves into `components.schemas`."""

    def __init__(self, document: Schema) -> None:
        self.source = document
        self.hoisted: dict[str, Schema] = {}
        taken = document.get("components", {}).get("schemas", {})
        self.taken: set[str] = set(taken) if isinstance(taken, dict) else set()
        self.dropped_schemes = {name for name, scheme in
                                document.get("components", {}).get("securitySchemes", {}).items()
                                if isinstance(scheme, dict) and scheme.get("type") == "mutualTLS"}
        # Where each `$defs` entry goes: by the JSON pointer `$ref`s use (`#/components/schemas/
        # Thing/$defs/Leaf`), and by the schema object holding it (for `#/$defs/Leaf` under an `$id`).
        self.moved: dict[str, str] = {}
        self.defs_of: dict[int, dict[str, str]] = {}
        self._find_defs(document, "#")

    def _find_defs(self, node: Any, pointer: str) -> None:
        if isinstance(node, dict):
            defs = node.get("$defs")
            if isinstance(defs, dict) and not pointer.endswith("/properties"):  # not a property named $defs
                names = {name: self._hoist_name(name) for name in defs}
                self.defs_of[id(node)] = names
                for name, target in names.items():
                    self.moved[f"{pointer}/$defs/{_escape(name)}"] = target
            for key, value in node.items():
                self._find_defs(value, f"{pointer}/{_escape(str(key))}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                self._find_defs(value, f"{pointer}/{index}")

    # ------------------------------------------------------------ the document's structure

    def document(self) -> Schema:
        out: Schema = {}
        for key, value in self.source.items():
            if key == "openapi":
                out[key] = OPENAPI_30
            elif key in ("jsonSchemaDialect", "webhooks"):
                continue
            elif key == "info":
                out[key] = self.info(value)
            elif key == "paths":
                out[key] = {path: self.path_item(item) for path, item in value.items()}
            elif key == "components":
                out[key] = self.components(value)
            elif key == "security":
                if self.security(value) or not value:  # only dropped schemes: nothing 3.0 can say
                    out[key] = self.security(value)
            else:
                out[key] = _copy(value)
        out.setdefault("paths", {})
        return out

    def info(self, info: Schema) -> Schema:
        out = {k: _copy(v) for k, v in info.items() if k != "summary"}
        if isinstance(out.get("license"), dict):
            out["license"].pop("identifier", None)
        return out

    def security(self, requirements: list[Schema]) -> list[Schema]:
        kept = [{k: _copy(v) for k, v in requirement.items() if k not in self.dropped_schemes}
                for requirement in requirements]
        # An alternative that named only a dropped scheme would become `{}` (no security at all).
        return [r for r, original in zip(kept, requirements, strict=True) if r or not original]

    def components(self, components: Schema) -> Schema:
        out: Schema = {}
        for key, value in components.items():
            if key == "pathItems":
                continue
            handle = self._component_kinds().get(key)
            if key == "securitySchemes":
                out[key] = {n: _copy(s) for n, s in value.items() if n not in self.dropped_schemes}
            elif handle is None:
                out[key] = _copy(value)
            else:
                out[key] = {name: handle(item) for name, item in value.items()}
        return out

    def _component_kinds(self) -> dict[str, Callable[[Any], Any]]:
        return {"schemas": self.schema, "responses": self.response, "parameters": self.parameter,
                "requestBodies": self.request_body, "headers": self.parameter, "callbacks": self.callback}

    def path_item(self, item: Schema, seen: tuple[str, ...] = ()) -> Schema:
        ref = item.get("$ref")
        if isinstance(ref, str) and ref.startswith(_PATH_ITEMS) and ref not in seen:
            # 3.0 has no components.pathItems: the item referred to is written in place.
            shared = self.source.get("components", {}).get("pathItems", {}).get(ref[len(_PATH_ITEMS):])
            if isinstance(shared, dict):
                merged = {**shared, **{k: v for k, v in item.items() if k != "$ref"}}
                return self.path_item(merged, (*seen, ref))
        out: Schema = {}
        for key, value in item.items():
            if key in _METHODS:
                out[key] = self.operation(value)
            elif key == "parameters":
                out[key] = [self.parameter(p) for p in value]
            else:
                out[key] = _copy(value)
        return out

    def operation(self, operation: Schema) -> Schema:
        out: Schema = {}
        for key, value in operation.items():
            if key == "parameters":
                out[key] = [self.parameter(p) for p in value]
            elif key == "requestBody":
                out[key] = self.request_body(value)
            elif key == "responses":
                out[key] = {code: self.response(r) for code, r in value.items()}
            elif key == "callbacks":
                out[key] = {name: self.callback(c) for name, c in value.items()}
            elif key == "security":
                if self.security(value) or not value:  # only dropped schemes: the document's apply
                    out[key] = self.security(value)
            else:
                out[key] = _copy(value)
        out.setdefault("responses", {"default": {"description": "the operation's answer"}})
        return out

    def callback(self, callback: Schema) -> Schema:
        if "$ref" in callback:
            return _copy(callback)
        return {expression: self.path_item(item) for expression, item in callback.items()}

    def parameter(self, parameter: Schema) -> Schema:
        """A Parameter or Header Object (both carry `schema` or `content`)."""
        out = {k: _copy(v) for k, v in parameter.items()}
        if "schema" in parameter:
            out["schema"] = self.schema(parameter["schema"])
        if "content" in parameter:
            out["content"] = self.content(parameter["content"])
        return out

    def request_body(self, body: Schema) -> Schema:
        out = {k: _copy(v) for k, v in body.items()}
        if "content" in body:
            out["content"] = self.content(body["content"])
        return out

    def response(self, response: Schema) -> Schema:
        out = {k: _copy(v) for k, v in response.items()}
        if "content" in response:
            out["content"] = self.content(response["content"])
        if "headers" in response:
            out["headers"] = {n: self.parameter(h) for n, h in response["headers"].items()}
        return out

    def content(self, content: Schema) -> Schema:
        out: Schema = {}
        for media_type, media in content.items():
            converted = {k: _copy(v) for k, v in media.items()}
            if "schema" in media:
                converted["schema"] = self.schema(media["schema"])
            if "encoding" in media:
                converted["encoding"] = {
                    name: {**_copy(enc), **({"headers": {n: self.parameter(h) for n, h in enc["headers"].items()}}
                                            if "headers" in enc else {})}
                    for name, enc in media["encoding"].items()}
            out[media_type] = converted
        return out

    # ------------------------------------------------------------ Schema Objects

    def schema(self, schema: Any, defs: dict[str, str] | None = None) -> Schema:
        """One Schema Object in 3.0's dialect; `defs` maps the `$defs` names in scope to where
        they were moved."""
        if schema is True:
            return {}
        if schema is False:
            return {"not": {}}
        if not isinstance(schema, dict):
            kept: Schema = _copy(schema)  # not a schema: left for the validator to report
            return kept
        if isinstance(schema.get("$defs"), dict):
            names = self.defs_of.get(id(schema)) or {name: self._hoist_name(name) for name in schema["$defs"]}
            defs = {**(defs or {}), **names}
            for name, sub in schema["$defs"].items():
                self.hoisted[names[name]] = self.schema(sub, defs)
        out: Schema = {}
        for key, value in schema.items():
            if key in _DROPPED_KEYWORDS or key == "$defs":
                continue
            if key == "$ref":
                out[key] = self.ref(value, defs)
            elif key in _SCHEMA_LISTS:
                out[key] = [self.schema(s, defs) for s in value]
            elif key in _SCHEMA_VALUES and (isinstance(value, dict) or key != "additionalProperties"):
                out[key] = self.schema(value, defs)
            elif key == "properties":
                out[key] = {name: self.schema(s, defs) for name, s in value.items()}
            elif key == "prefixItems":
                out[key] = [self.schema(s, defs) for s in value]
            else:
                out[key] = _copy(value)
        for rewrite in _SCHEMA_REWRITES:
            out = rewrite(out)
        return out

    def _hoist_name(self, name: str) -> str:
        candidate, number = name, 1
        while candidate in self.taken:
            number += 1
            candidate = f"{name}{number}"
        self.taken.add(candidate)
        return candidate


    def ref(self, ref: str, defs: dict[str, str] | None) -> str:
        """A `$ref` to a moved `$defs` entry (or into one) pointed at its new place."""
        for pointer, target in sorted(self.moved.items(), key=lambda item: -len(item[0])):  # innermost first
            if ref == pointer or ref.startswith(pointer + "/"):
                return f"#/components/schemas/{target}{ref[len(pointer):]}"
        if defs and ref.startswith(_DEFS_PREFIX):
            name = ref[len(_DEFS_PREFIX):].split("/", 1)[0]
            if name in defs:
                return f"#/components/schemas/{defs[name]}{ref[len(_DEFS_PREFIX) + len(name):]}"
        return ref


def _escape(segment: str) -> str:
    """A JSON pointer segment (RFC 6901)."""
    return segment.replace("~", "~0").replace("/", "~1")


def _copy(value: _T) -> _T:
    """A deep copy of JSON data (the output shares nothing with the input)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [_copy(v) for v in value]  # type: ignore[return-value]
    return value


# ---------------------------------------------------------------- one rewrite per 3.1 construct
# Each takes a schema whose sub-schemas are already converted and returns it rewritten.


# The keywords that apply to one JSON type only: a type list's alternatives each take their own.
_TYPE_KEYWORDS: dict[str, frozenset[str]] = {
    "number": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "format"}),
    "integer": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "format"}),
    "string": frozenset({"minLength", "maxLength", "pattern", "format"}),
    "array": frozenset({"items", "minItems", "maxItems", "uniqueItems"}),
    "object": frozenset({"properties", "required", "additionalProperties", "minProperties", "maxProperties"}),
    "boolean": frozenset(),
    "null": frozenset(),
}
_ANY_TYPE_KEYWORD = frozenset().union(*_TYPE_KEYWORDS.values())


def _types(schema: Schema) -> Schema:
    """A type list: one type and `nullable`, or an `anyOf` with an alternative per type that
    carries that type's keywords (generators and validators read `items` next to `type: array`)."""
    types = schema.get("type")
    if not isinstance(types, list) and types != "null":
        return schema
    names = [types] if isinstance(types, str) else list(types)
    rest = {k: v for k, v in schema.items() if k != "type"}
    concrete = [t for t in names if t != "null"]
    nullable = {"nullable": True} if len(concrete) < len(names) else {}
    if not concrete:
        return {**rest, "nullable": True, "enum": [None]}  # only null: 3.0 has no "null" type
    if len(concrete) == 1:
        return {"type": concrete[0], **rest, **nullable}
    alternatives = [_rewritten({"type": t, **{k: _copy(v) for k, v in rest.items()
                                              if k in _TYPE_KEYWORDS.get(t, ())}, **nullable})
                    for t in concrete]
    rest = {k: v for k, v in rest.items() if k not in _ANY_TYPE_KEYWORD}
    if "anyOf" in rest:  # keep both: the types and the schema's own alternatives
        existing = rest.pop("anyOf")
        rest["allOf"] = [*rest.get("allOf", []), {"anyOf": alternatives}, {"anyOf": existing}]
        return rest
    return {**rest, "anyOf": alternatives}


def _const(schema: Schema) -> Schema:
    """`enum` of the one value, typed by it (3.0 generators want an enum's type)."""
    if "const" not in schema:
        return schema
    value = schema["const"]
    rest = {k: v for k, v in schema.items() if k != "const"}
    rest["enum"] = [v for v in rest["enum"] if v == value] if "enum" in rest else [value]
    if value is None:
        rest["nullable"] = True
    elif "type" not in rest and _json_type(value) is not None:
        rest = {"type": _json_type(value), **rest}
    return rest


def _json_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object" if isinstance(value, dict) else None


def _examples(schema: Schema) -> Schema:
    examples = schema.get("examples")
    if not isinstance(examples, list):
        return schema
    rest = {k: v for k, v in schema.items() if k != "examples"}
    if examples and "example" not in rest:
        rest["example"] = examples[0]
    return rest


def _prefix_items(schema: Schema) -> Schema:
    if "prefixItems" not in schema:
        return schema
    rest = {k: v for k, v in schema.items() if k != "prefixItems"}
    alternatives = list(schema["prefixItems"])
    more = rest.pop("items", None)
    if more == {"not": {}}:  # `items: false`: nothing after the prefix
        rest["maxItems"] = min(rest.get("maxItems", len(alternatives)), len(alternatives))
    elif more is not None:
        alternatives.append(more)
    else:
        alternatives.append({})
    rest["items"] = alternatives[0] if len(alternatives) == 1 else {"anyOf": alternatives}
    return rest


def _exclusive_bounds(schema: Schema) -> Schema:
    out = dict(schema)
    for exclusive, inclusive, stricter in (("exclusiveMinimum", "minimum", max), ("exclusiveMaximum", "maximum", min)):
        bound = out.get(exclusive)
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            continue
        other = out.get(inclusive)
        if isinstance(other, int | float) and not isinstance(other, bool) and stricter(other, bound) == other \
                and other != bound:
            del out[exclusive]  # the inclusive bound is the stricter one
            continue
        out[inclusive] = bound
        out[exclusive] = True
    return out


def _content_encoding(schema: Schema) -> Schema:
    if "contentEncoding" not in schema:
        return schema
    rest = {k: v for k, v in schema.items() if k != "contentEncoding"}
    if schema["contentEncoding"] == "base64" and "format" not in rest:
        rest["format"] = "byte"
    return rest


def _ref_siblings(schema: Schema) -> Schema:
    """3.0 ignores a `$ref`'s siblings; 3.1 applies them too: keep both through `allOf`."""
    if "$ref" not in schema or len(schema) == 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "$ref"}
    return {**rest, "allOf": [{"$ref": schema["$ref"]}, *rest.get("allOf", [])]}


def _array_items(schema: Schema) -> Schema:
    """3.0 requires `items` on an array schema."""
    if schema.get("type") == "array" and "items" not in schema:
        return {**schema, "items": {}}
    return schema


# After `_types`, the rewrites its alternatives take too.
_PER_TYPE_REWRITES: tuple[Callable[[Schema], Schema], ...] = (
    _const, _examples, _prefix_items, _exclusive_bounds, _content_encoding, _array_items,
)
_SCHEMA_REWRITES: tuple[Callable[[Schema], Schema], ...] = (_ref_siblings, _types, *_PER_TYPE_REWRITES)


def _rewritten(schema: Schema) -> Schema:
    for rewrite in _PER_TYPE_REWRITES:
        schema = rewrite(schema)
    return schema

