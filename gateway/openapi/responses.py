"""The parts of the OpenAPI document that do not depend on contracts: the error bodies and the
statuses they come with (read from the one error tree, gateway/errors.py), the answers of the
listing, health, metrics and admin routes, TF Serving's status, metadata, classify and regress
bodies, and the request and response headers the routes read and send."""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from gateway.answers import _HTTP_CODES
from gateway.binary import DTYPE_HEADER, NAME_HEADER, SHAPE_HEADER
from gateway.errors import BACKEND_ERRORS, ClientClosed, GatewayError
from gateway.observability import REQUEST_ID_HEADER
from gateway.routes.native import TIMEOUT_HEADER
from gateway.routing import MAX_ROUTE_KEY_BYTES, ROUTE_KEY_HEADER, VARIANT_HEADER
from protos.tensorflow_serving.get_model_status_pb2 import ModelVersionStatus
from tensorcodecs.dtypes import TABLE

Schema = dict[str, Any]
REF = "#/components/"


def ref(kind: str, name: str) -> Schema:
    return {"$ref": f"{REF}{kind}/{name}"}


def _error_classes() -> list[type[GatewayError]]:
    """Every class of the gateway's error tree (gateway/errors.py), the root first: not the
    client's own (gateway.client.errors), which no answer carries."""
    found: list[type[GatewayError]] = []
    todo: list[type[GatewayError]] = [GatewayError]
    while todo:
        kind = todo.pop(0)
        if kind not in found and kind.__module__ == GatewayError.__module__:
            found.append(kind)
            todo.extend(kind.__subclasses__())
    return found


# 499: the client closed the connection before its body arrived; nobody reads that answer.
UNREAD = frozenset({ClientClosed.status})
# Status -> the machine codes an error answer of that status may carry, from the error tree and
# the router's own (404, 405, 413, 415).
CODES_BY_STATUS: dict[int, tuple[str, ...]] = {}
for _kind in _error_classes():
    if _kind.status not in UNREAD:
        CODES_BY_STATUS.setdefault(_kind.status, ())
        if _kind.code not in CODES_BY_STATUS[_kind.status]:
            CODES_BY_STATUS[_kind.status] += (_kind.code,)
for _status, _code in _HTTP_CODES.items():
    if _code not in CODES_BY_STATUS.setdefault(_status, ()):
        CODES_BY_STATUS[_status] += (_code,)
ERROR_CODES: tuple[str, ...] = tuple(sorted({code for codes in CODES_BY_STATUS.values() for code in codes}
                                            | {"http_error"}))
# The statuses a backend's own gRPC status may become (gateway.errors.BACKEND_ERRORS); its
# 401/403 (the backend refusing the gateway's credentials) share the client's, documented with keys.
BACKEND_STATUSES: tuple[int, ...] = tuple(sorted({kind.status for kind in BACKEND_ERRORS.values()}
                                                 - UNREAD - {401, 403} | {502}))


def status_name(status: int) -> str:
    """The name of a status's response component: its reason phrase, e.g. `BadRequest`."""
    return re.sub(r"[^A-Za-z0-9]", "", HTTPStatus(status).phrase.title())


# What each error status means on the gateway's routes (else its reason phrase).
_WHY: dict[int, str] = {
    400: "The request does not fit the contract or is malformed.",
    401: "No valid API key (Authorization: Bearer <key> or x-api-key).",
    403: "This API key may not call it.",
    404: "No such application, model, version or label, or the backend does not offer the call.",
    408: "The request's headers or body did not arrive in time; the connection is closed.",
    409: "The backend refused the call (already exists, aborted), or an admin change conflicts (a read-only "
         "config directory, a model version an application uses).",
    413: "The body is over the size limit (or a gzip body inflates beyond its cap).",
    415: "A content type or content encoding the route does not take.",
    429: "The application is at its concurrency limit (Retry-After), or its backend out of a resource.",
    500: "The model's own code failed (`model_error`), or the gateway itself (`internal`).",
    501: "The backend does not implement the call.",
    502: "The backend answered something unusable, or outputs its contract does not allow.",
    503: "The backend is down or not ready, or the gateway at its limit or stopping (Retry-After).",
    504: "The backend missed the request's deadline.",
}
RETRY_STATUSES = frozenset({429, 503})
# Answered before a route is known (gateway/http_protocol.py: headers late), in the native shape.
NO_ROUTE_YET = frozenset({408})


def error_schemas() -> dict[str, Schema]:
    """The two error bodies: the native one and TF Serving's."""
    return {
        "Error": {
            "type": "object", "required": ["error"], "additionalProperties": False,
            "description": "The native error body.",
            "properties": {"error": {
                "type": "object", "required": ["code", "message"], "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "enum": list(ERROR_CODES),
                             "description": "What went wrong, for programs."},
                    "message": {"type": "string", "description": "What went wrong, for people."},
                    "field": {"type": "string", "description": "The input (and element) at fault, e.g. `number[2]`."},
                }}},
        },
        "TFServingError": {
            "type": "object", "required": ["error"], "additionalProperties": False,
            "description": "TF Serving's REST API error body.",
            "properties": {"error": {"type": "string"}},
        },
    }


def error_responses() -> dict[str, Schema]:
    """One response component per error status and body shape (`TFServing<Name>` on /v1,
    `V2<Name>` on /v2)."""
    responses: dict[str, Schema] = {}
    for status, codes in sorted(CODES_BY_STATUS.items()):
        name = status_name(status)
        headers: Schema = {"x-request-id": ref("headers", "RequestId")}
        if status in RETRY_STATUSES:
            headers["Retry-After"] = ref("headers", "RetryAfter")
        if status == 401:  # an API key's refusal (an admin route's says none)
            headers["WWW-Authenticate"] = ref("headers", "WWWAuthenticate")
        why = _WHY.get(status, HTTPStatus(status).phrase + ".")
        for prefix, schema in (("", "Error"), ("TFServing", "TFServingError"), (V2, "V2Error")):
            text = why + (f" Codes: {', '.join(f'`{c}`' for c in codes)}." if codes and not prefix else "")
            body: Schema = ref("schemas", schema)
            if prefix and status in NO_ROUTE_YET:
                body = {"oneOf": [body, ref("schemas", "Error")]}
                text += " Headers that did not arrive in time get the native body (no route was known yet)."
            responses[prefix + name] = {"description": text, "headers": headers,
                                        "content": {"application/json": {"schema": body}}}
    return responses


V2 = "V2"  # the prefix of the Open Inference Protocol's error responses (gateway/routes/v2.py)


def error_refs(statuses: Iterable[int], tf_serving: bool = False, prefix: str | None = None) -> dict[str, Schema]:
    """The `responses` entries of `statuses`, each a reference to its component (`prefix`: of
    the API surface whose error body they carry, `TFServing` when `tf_serving`)."""
    if prefix is None:
        prefix = "TFServing" if tf_serving else ""
    return {str(status): ref("responses", prefix + status_name(status)) for status in sorted(set(statuses))}


def headers() -> dict[str, Schema]:
    """The response headers the routes send."""
    text: Schema = {"type": "string"}
    return {
        "RequestId": {"description": "The request's id (the client's own `x-request-id` when it sent one); "
                                     "logs name it.", "schema": text},
        "RetryAfter": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer",
                                                                                          "minimum": 0}},
        "ServerTiming": {"description": "Where the request's time went (W3C Server-Timing: decode, backend, "
                                        "encode, ...).", "schema": text},
        "Variants": {"description": "The variant that served each stage, e.g. `increment_model:1`.",
                     "schema": text},
        "ModelSpec": {"description": "The model spec the backend answered with: "
                                     "`name=...; version=...; signature_name=...`.", "schema": text},
        "WWWAuthenticate": {"description": "`Bearer`: on a client route, how to present an API key.",
                            "schema": text},
        "TensorName": {"description": "The output tensor's name.", "schema": text},
        "TensorDtype": {"description": "The output tensor's dtype.", "schema": text},
        "TensorShape": {"description": "The output tensor's shape: comma-separated sizes, empty for a scalar.",
                        "schema": text},
    }


def parameters() -> dict[str, Schema]:
    """The request headers the routes read."""
    return {
        "RequestTimeout": {
            "name": TIMEOUT_HEADER, "in": "header", "required": False,
            "description": "The request's deadline in milliseconds (capped by `max_request_timeout_s`; "
                           "else the application's `timeout_s`, else the gateway's). A deadline shorter than the "
                           "model's time answers 504, however small.",
            "schema": {"type": "number", "exclusiveMinimum": 0}},
        "RequestId": {
            "name": REQUEST_ID_HEADER.decode(), "in": "header", "required": False,
            "description": "The client's id for this request, echoed in the answer and the logs.",
            "schema": {"type": "string"}},
        "RouteKey": {
            "name": ROUTE_KEY_HEADER, "in": "header", "required": False,
            "description": "A sticky key: requests of one key reach the same variant of each stage.",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ROUTE_KEY_BYTES}},
    }


def variant_parameter(stages: tuple[tuple[str, ...], ...], admin_tokens: bool) -> Schema:
    """`x-gateway-variant` for an application that allows it."""
    names = sorted({name for stage in stages for name in stage})
    needs = " With admin tokens configured it needs `Authorization: Bearer <admin token>` (the API key "
    needs += "then in `x-api-key`)." if admin_tokens else ""
    return {"name": VARIANT_HEADER, "in": "header", "required": False,
            "description": "Force the live variant of a stage (`name:version`, comma-separated, one per stage): "
                           f"{', '.join(names)}.{needs}",
            "schema": {"type": "string", "minLength": 1, "examples": names}}


def binary_parameters(name: str, dtype: str) -> list[Schema]:
    """The headers of a raw tensor body (gateway/binary.py), for the contract's one input."""
    return [
        {"name": NAME_HEADER, "in": "header", "required": False,
         "description": "With `application/octet-stream`: the input's name (default: the only one).",
         "schema": {"type": "string", "enum": [name]}},
        {"name": DTYPE_HEADER, "in": "header", "required": False,
         "description": "With `application/octet-stream`: the dtype of the raw little-endian values "
                        "(default: the contract's).",
         "schema": {"type": "string", "enum": [dtype]}},
        {"name": SHAPE_HEADER, "in": "header", "required": False,
         "description": "With `application/octet-stream`: comma-separated sizes, empty for a scalar "
                        "(default: one dimension of every element).",
         "schema": {"type": "string", "pattern": r"^\s*([0-9]+\s*(,\s*[0-9]+\s*)*)?$"}},
    ]


def binary_headers() -> dict[str, Schema]:
    return {NAME_HEADER: ref("headers", "TensorName"), DTYPE_HEADER: ref("headers", "TensorDtype"),
            SHAPE_HEADER: ref("headers", "TensorShape")}


# ---------------------------------------------------------------- listing, health, admin


def _nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


def listing_schemas() -> dict[str, Schema]:
    """The bodies of GET /gateway/applications[/{name}] and GET /gateway/models[/{name}]
    (gateway/manifests/plan_json.py, gateway/routes/models.py)."""
    tensors = _nullable({"type": "array", "items": ref("schemas", "TensorSpec")})
    strings: Schema = {"type": "array", "items": {"type": "string"}}
    contract = {"oneOf": [ref("schemas", "VariantContract"), {"type": "null"}],
                "description": "The variant's own contract, when it is not the stage's (null: not discovered yet)."}
    return {
        "TensorSpec": {
            "type": "object", "required": ["name", "dtype", "shape"], "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "dtype": {"type": "string", "enum": [dtype.name for dtype in TABLE]},
                "shape": {"oneOf": [{"type": "array", "items": {"type": "integer", "minimum": -1}},
                                    {"type": "null"}],
                          "description": "Sizes (-1: any), [] for a scalar, null for any shape."}}},
        "VariantContract": {
            "type": "object", "required": ["inputs", "outputs"], "additionalProperties": False,
            "properties": {"inputs": {"type": "array", "items": ref("schemas", "TensorSpec")},
                           "outputs": {"type": "array", "items": ref("schemas", "TensorSpec")}}},
        "PlanVariant": {"oneOf": [
            {"type": "object", "required": ["model", "shadow", "weight", "share"], "additionalProperties": False,
             "properties": {"model": {"type": "string"}, "shadow": {"const": False},
                            "weight": {"type": "integer", "minimum": 0}, "share": {"type": "number"},
                            "contract": contract}},
            {"type": "object", "required": ["model", "shadow", "sample"], "additionalProperties": False,
             "properties": {"model": {"type": "string"}, "shadow": {"const": True},
                            "sample": {"type": "number", "minimum": 0, "maximum": 1}, "contract": contract}}]},
        "ApplicationPlan": {
            "type": "object", "additionalProperties": False,
            "required": ["name", "inputs", "outputs", "stages", "dropped", "problems", "shadow_problems"],
            "properties": {
                "name": {"type": "string"}, "inputs": tensors, "outputs": tensors,
                "stages": {"type": "array", "items": {
                    "type": "object", "required": ["stage", "variants", "inputs", "outputs"],
                    "additionalProperties": False,
                    "properties": {"stage": {"type": "integer", "minimum": 1},
                                   "variants": {"type": "array", "items": ref("schemas", "PlanVariant")},
                                   "inputs": tensors, "outputs": tensors}}},
                "dropped": strings, "problems": strings, "shadow_problems": strings}},
        "ApplicationList": {
            "type": "object", "required": ["applications"], "additionalProperties": False,
            "properties": {"applications": {"type": "array", "items": ref("schemas", "ApplicationPlan")}}},
        "ModelVersion": {
            "type": "object", "additionalProperties": False,
            "required": ["name", "version", "labels", "kind", "state", "contract", "signature_name", "inputs",
                         "outputs", "applications"],
            "properties": {
                "name": {"type": "string"}, "version": {"type": "integer", "minimum": 0},
                "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
                "kind": {"type": "string"},
                "state": {"type": "string", "enum": ["ready", "not_ready", "unavailable"]},
                "contract": {"type": "string", "enum": ["declared", "discovered", "unknown"]},
                "signature_name": {"type": "string"}, "inputs": tensors, "outputs": tensors,
                "applications": strings,
                "error": {"type": "string", "description": "Why it is unavailable."}}},
        "ModelList": {
            "type": "object", "required": ["models"], "additionalProperties": False,
            "properties": {"models": {"type": "array", "items": ref("schemas", "ModelVersion")}}},
        "Model": {
            "type": "object", "required": ["name", "versions"], "additionalProperties": False,
            "properties": {"name": {"type": "string"},
                           "versions": {"type": "array", "items": ref("schemas", "ModelVersion")}}},
    }


def health_schemas() -> dict[str, Schema]:
    """The bodies of /health/live and /health/ready (gateway/routes/health.py)."""
    strings: Schema = {"type": "array", "items": {"type": "string"}}
    return {
        "Live": {"type": "object", "required": ["status"], "additionalProperties": False,
                 "properties": {"status": {"const": "alive"}}},
        "Ready": {
            "type": "object", "required": ["status", "applications"], "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": ["ready", "not_ready", "draining"]},
                "applications": {"type": "object", "additionalProperties": {
                    "type": "object", "additionalProperties": False,
                    "required": ["ready", "models", "problems", "shadow_problems", "unserved_variants"],
                    "properties": {
                        "ready": {"type": "boolean"},
                        "models": {"type": "object", "additionalProperties": {
                            "type": "object", "required": ["ready", "target", "checked_at"],
                            "additionalProperties": False,
                            "properties": {"ready": {"type": "boolean"}, "target": {"type": "string"},
                                           "checked_at": {"type": "number"}, "error": {"type": "string"}}}},
                        "problems": strings, "shadow_problems": strings, "unserved_variants": strings}}},
                "request_logs": {"type": "object", "additionalProperties": {
                    "type": "object", "required": ["ok", "error", "queued"], "additionalProperties": False,
                    "properties": {"ok": {"type": "boolean"}, "error": {"type": ["string", "null"]},
                                   "queued": {"type": "integer", "minimum": 0}}}}}},
    }


def admin_schemas() -> dict[str, Schema]:
    """The answers of the admin routes (gateway/routes/admin*.py)."""
    strings: Schema = {"type": "array", "items": {"type": "string"}}
    return {
        "ReloadResult": {
            "type": "object", "additionalProperties": False,
            "required": ["applied", "error", "applications", "models", "failed"],
            "properties": {
                "applied": {"type": "boolean"}, "error": {"type": ["string", "null"]},
                "applications": strings, "models": strings,
                "failed": {"type": "object", "additionalProperties": {"type": "string"},
                           "description": "Models not served (`name:version`), and why."}}},
        "UploadedModel": {
            "type": "object", "required": ["name", "version", "state"],
            "properties": {"name": {"type": "string"}, "version": {"type": "integer"}, "state": {"type": "string"},
                           "folder": {"type": "string", "description": "Where it is, in the config directory."},
                           "build": {"type": "object", "description": "The install-command and the seconds it took."}}},
        "UploadEvent": {
            "type": "object", "required": ["event"],
            "description": "One line of an upload's progress: received, version, build (a line of the "
                           "install-command's output), starting, then done (status, model) or error (status, error).",
            "properties": {"event": {"type": "string", "enum": ["received", "version", "build", "starting", "done",
                                                                  "error"]},
                           "status": {"type": "integer"}, "line": {"type": "string"}}},
        "ApplyRequest": {
            "type": "object", "required": ["text"], "additionalProperties": False,
            "properties": {"file": {"type": "string", "description": "The name errors give the text (e.g. app.yaml)."},
                           "text": {"type": "string", "description": "YAML documents, separated by `---`."}}},
        "ApplyResult": {
            "type": "object", "required": ["applied", "dry_run", "documents", "changes", "breaking"],
            "properties": {
                "applied": {"type": "boolean"}, "dry_run": {"type": "boolean"},
                "documents": {"type": "array", "items": {
                    "type": "object", "required": ["kind", "name", "action"],
                    "properties": {"kind": {"type": "string"}, "name": {"type": "string"},
                                   "version": {"type": "integer"},
                                   "action": {"type": "string", "enum": ["created", "updated", "unchanged"]}}}},
                "changes": strings, "breaking": {"type": "integer", "minimum": 0},
                "plans": {"type": "object", "additionalProperties": strings}}},
        "Deleted": {
            "type": "object", "required": ["deleted", "name"],
            "properties": {"deleted": {"type": "string", "enum": ["application", "model"]}, "name": {"type": "string"},
                           "version": {"type": "integer"}}},
        "ModelServerConfig": {
            "type": "object", "description": "TF Serving's ModelServerConfig in its JSON form "
                                             "(`model_config_list: {config: [...]}`)."},
        "ReloadConfigAnswer": {
            "type": "object", "required": ["status"], "additionalProperties": False,
            "properties": {"status": ref("schemas", "TFStatus")}},
    }


def tfserving_schemas() -> dict[str, Schema]:
    """TF Serving's status, metadata, classify and regress bodies (tensorcodecs/tfserving_json.py)."""
    feature_value: Schema = {"oneOf": [
        {"type": "string"}, {"type": "number"}, {"type": "boolean"},
        {"type": "object", "required": ["b64"], "additionalProperties": False,
         "properties": {"b64": {"type": "string", "contentEncoding": "base64"}}}]}
    states = list(ModelVersionStatus.State.keys())
    return {
        "TFStatus": {
            "type": "object", "required": ["error_code", "error_message"], "additionalProperties": False,
            "properties": {"error_code": {"type": ["string", "integer"]}, "error_message": {"type": "string"}}},
        "TFModelStatus": {
            "type": "object", "required": ["model_version_status"], "additionalProperties": False,
            "properties": {"model_version_status": {"type": "array", "items": {
                "type": "object", "required": ["version", "state"], "additionalProperties": False,
                "properties": {"version": {"type": "string"}, "state": {"type": "string", "enum": states},
                               "status": ref("schemas", "TFStatus")}}}}},
        "TFModelMetadata": {
            "type": "object", "required": ["model_spec", "metadata"], "additionalProperties": False,
            "properties": {
                "model_spec": {"type": "object", "required": ["name", "signature_name"], "additionalProperties": False,
                               "properties": {"name": {"type": "string"}, "signature_name": {"type": "string"},
                                              "version": {"type": "string"}, "version_label": {"type": "string"}}},
                "metadata": {"type": "object", "required": ["signature_def"], "properties": {
                    "signature_def": {"type": "object", "description": "The SignatureDefMap in protobuf's JSON form.",
                                      "properties": {"signature_def": {"type": "object", "additionalProperties": {
                                          "type": "object"}}}}}}}},
        "TFExample": {"type": "object", "description": "A tf.Example: feature name -> value or list of values "
                                                       "(strings are bytes, integers int64, other numbers float).",
                      "additionalProperties": {"oneOf": [feature_value, {"type": "array", "items": feature_value}]}},
        "TFExamplesRequest": {
            "type": "object", "required": ["examples"],
            "properties": {"signature_name": {"type": "string"}, "context": ref("schemas", "TFExample"),
                           "examples": {"type": "array", "minItems": 1, "items": ref("schemas", "TFExample")}}},
        "TFClassifyResponse": {
            "type": "object", "required": ["results"], "additionalProperties": False,
            "properties": {"results": {"type": "array", "items": {"type": "array", "items": {
                "type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}], "minItems": 2,
                "maxItems": 2}}}}},
        "TFRegressResponse": {
            "type": "object", "required": ["results"], "additionalProperties": False,
            "properties": {"results": {"type": "array", "items": {"type": "number"}}}},
    }
