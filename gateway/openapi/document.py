"""The OpenAPI 3.1 document of a catalog (gateway/openapi/catalog.py): one literal path per
application and per native and TF Serving model route, typed by its contract
(gateway/openapi/schemas.py), every error status the route can answer with its body, the
listing, health, metrics, admin and document routes, and the security schemes when API keys
or admin tokens are configured. Pure: the same catalog gives the same document."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from prometheus_client import CONTENT_TYPE_LATEST

import gateway
from gateway.errors import BACKEND_ERRORS
from gateway.openapi import oip
from gateway.openapi import responses as parts
from gateway.openapi.catalog import AppEntry, Catalog, ModelEntry
from gateway.openapi.responses import BACKEND_STATUSES, V2, Schema, error_refs, ref
from gateway.openapi.schemas import (
    GENERIC_REQUEST,
    GENERIC_RESPONSE,
    GENERIC_TFSERVING_REQUEST,
    GENERIC_TFSERVING_RESPONSE,
    native_example,
    native_request_schema,
    native_response_schema,
    tfserving_examples,
    tfserving_request_forms,
    tfserving_request_schema,
    tfserving_response_forms,
    tfserving_response_schema,
)
from tensorcodecs import Signature, TensorSpec
from tensorcodecs.dtypes import JsonKind
from tensorcodecs.signature_def import CLASSIFY_METHOD, REGRESS_METHOD

OPENAPI_VERSION = "3.1.0"
JSON_SCHEMA_DIALECT = "https://spec.openapis.org/oas/3.1/dialect/base"
TAGS = (
    ("applications", "Predict with an application: its contract, its stages."),
    ("models", "Predict with one model version, label or its latest version."),
    ("tensorflow-serving", "TensorFlow Serving's REST API (/v1/models), its semantics and error body."),
    oip.TAG,
    ("listing", "Applications' plans and model versions as JSON."),
    ("health", "Liveness, readiness and Prometheus metrics."),
    ("admin", "Reloading the configuration and TF Serving's model config."),
    ("documents", "This document (JSON, YAML, OpenAPI 3.0) and the interactive page."),
)
SECURITY: tuple[Schema, ...] = ({"ApiKeyBearer": []}, {"ApiKeyHeader": []})  # either alternative
ADMIN_SECURITY: tuple[Schema, ...] = ({"AdminToken": []},)
# What every route with a body can refuse before reading it (JSON, limits, timeouts).
BODY_STATUSES = (400, 408, 413, 415)
# What every route reaching a backend can answer: its own errors and the gateway's around it.
BACKEND_CALL_STATUSES = (*BODY_STATUSES, 404, 429, 500, 502, 503, 504, *BACKEND_STATUSES)
_COMPONENT = re.compile(r"[A-Za-z0-9._-]+")  # what OpenAPI allows in a component's name
# A name's characters in an operationId (see `_escaped`): an escape is `_` and a digit, which no
# literal `_` is followed by.
_ESCAPES = {".": "_0", "-": "_1", "_": "_2"}
NON_FINITE = (" As TF Serving writes them, a non-finite float output is a bare `NaN`, `Infinity` or `-Infinity`: "
              "the body is then not strict JSON (parse it with a reader that takes them, e.g. Python's json).")
BODY_ENCODING = "May be sent gzip-compressed (`Content-Encoding: gzip`); another content encoding is a 415."
UNKNOWN_CONTRACT = ("Its contract is not known yet (to be discovered from its backend's metadata): the schemas "
                    "below are generic, and the gateway checks requests against the contract once it knows it.")


def build_document(catalog: Catalog) -> Schema:
    """The OpenAPI 3.1 document of `catalog`."""
    return _Builder(catalog).document()


class _Builder:
    """Collects paths and components, handing out unique component names and operation ids."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.paths: dict[str, Schema] = {}
        self.schemas: dict[str, Schema] = {}
        self.operation_ids: set[str] = set()

    def document(self) -> Schema:
        catalog = self.catalog
        self._listing()
        for app in catalog.applications:
            self._application(app)
        for name in catalog.model_names:
            self._native_model(name, catalog.versions(name))
        for name in catalog.model_names:
            self._tfserving_model(name, catalog.versions(name))
        self._open_inference()
        self._health()
        self._admin()
        self._documents()
        components: Schema = {
            "schemas": {**parts.error_schemas(), **parts.listing_schemas(), **parts.health_schemas(),
                        **parts.admin_schemas(), **parts.tfserving_schemas(), **oip.schemas(), **self.schemas},
            "responses": parts.error_responses(),
            "parameters": parts.parameters(),
            "headers": parts.headers(),
        }
        schemes = self._security_schemes()
        if schemes:
            components["securitySchemes"] = schemes
        return {
            "openapi": OPENAPI_VERSION,
            "jsonSchemaDialect": JSON_SCHEMA_DIALECT,
            "info": {
                "title": "Inference gateway",
                "version": gateway.__version__,
                "description": "Predict with the gateway's applications and models, typed by their contracts. "
                               "Try it at /docs; this document is also at /openapi.yaml and, in OpenAPI 3.0, "
                               "at /openapi-3.0.json.",
            },
            # Relative to where the document was read: behind a proxy that strips a path prefix, calls
            # keep the prefix (Swagger UI and generators resolve it against the document's URL).
            "servers": [{"url": ".", "description": "this gateway (where this document was read)"}],
            "tags": [{"name": name, "description": text} for name, text in TAGS],
            "paths": self.paths,
            "components": components,
        }

    # ------------------------------------------------------------ helpers

    def _operation_id(self, operation_id: str) -> str:
        """`operation_id` (made by `_id`: a function of the route alone), checked unique."""
        if operation_id in self.operation_ids:
            raise AssertionError(f"two operations are named {operation_id}")
        self.operation_ids.add(operation_id)
        return operation_id

    def _schema(self, name: str, schema: Schema) -> Schema:
        """A reference to `schema` as the component `name` (routes of one version share theirs)."""
        if not _COMPONENT.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid component name")
        if self.schemas.setdefault(name, schema) != schema:
            raise AssertionError(f"two schemas are named {name}")
        return ref("schemas", name)

    def _union(self, name: str, forms: dict[str, Schema], whole: Schema) -> Schema:
        """A reference to `whole`, a union of `forms`, as component `name` whose alternatives are
        components of their own (`<name minus .request>.row_request`...): client generators take
        a union of references, not of inline objects."""
        if len(forms) < 2:  # one form: itself (a union of one, generators refuse); none: no inputs
            return self._schema(name, next(iter(forms.values())) if forms else whole)
        base, _, kind = name.rpartition(".")
        union = {**whole, "oneOf": [self._schema(f"{base}.{form}_{kind}", schema) for form, schema in forms.items()]}
        return self._schema(name, union)

    def _client(self, operation: Schema, statuses: tuple[int, ...], tf_serving: bool = False,
                named: bool = True, prefix: str | None = None) -> Schema:
        """`operation` with its error responses (in the body of `prefix`'s surface, see
        `error_refs`) and, with API keys, security, 401 and, on a route naming an application or
        model (`named`: the key may not call it), 403."""
        keyed = ((401, 403) if named else (401,)) if self.catalog.api_keys else ()
        operation["responses"].update(error_refs((*statuses, *keyed), tf_serving, prefix))
        if self.catalog.api_keys:
            operation["security"] = list(SECURITY)
        return operation

    def _security_schemes(self) -> Schema:
        schemes: Schema = {}
        if self.catalog.api_keys:
            schemes["ApiKeyBearer"] = {"type": "http", "scheme": "bearer",
                                       "description": "An API key as `Authorization: Bearer <key>`."}
            schemes["ApiKeyHeader"] = {"type": "apiKey", "in": "header", "name": "x-api-key",
                                       "description": "An API key as `x-api-key: <key>`."}
        if self.catalog.admin_tokens:
            schemes["AdminToken"] = {"type": "http", "scheme": "bearer",
                                     "description": "An admin token as `Authorization: Bearer <token>`."}
        return schemes

    # ------------------------------------------------------------ native routes

    def _application(self, app: AppEntry) -> None:
        path = f"/gateway/applications/{_segment(app.name)}"
        stages = " -> ".join(" | ".join(stage) for stage in app.stages)
        parameters: list[Schema] = [ref("parameters", "RequestTimeout"), ref("parameters", "RequestId"),
                                    ref("parameters", "RouteKey")]
        if app.allow_variant_override:
            parameters.append(parts.variant_parameter(app.stages, self.catalog.admin_tokens))
        headers = {"x-gateway-variants": ref("headers", "Variants")}
        statuses = (*BACKEND_CALL_STATUSES, 403)  # x-gateway-variant where not allowed (or without a token)
        post = self._predict_operation(f"app.{app.name}", app.signature, parameters, headers, _id("predict", app.name),
                                       "applications", f"Predict with application {app.name}",
                                       f"Stages: {stages}. Also at /gateway/application/{_segment(app.name)}.",
                                       statuses)
        get = self._client({
            "operationId": self._operation_id(_id("get_application", app.name)), "tags": ["listing"],
            "summary": f"The plan of application {app.name}",
            "responses": {"200": _json_answer("Its stages, variants and contracts.", "ApplicationPlan")},
        }, (404,))
        self.paths[path] = {"get": get, "post": post}

    def _native_model(self, name: str, versions: tuple[ModelEntry, ...]) -> None:
        latest = versions[-1]
        base = f"/gateway/models/{_segment(name)}"
        get = self._client({
            "operationId": self._operation_id(_id("get_model", name)), "tags": ["listing"],
            "summary": f"The versions of model {name}",
            "responses": {"200": _json_answer("Each version's state and contract.", "Model")},
        }, (404,))
        post = self._model_predict(latest, _id("model_predict", name), f"Predict with model {name}",
                                   f"Its latest version ({_version_text(latest)}).")
        self.paths[base] = {"get": get, "post": post}
        for entry in versions:
            if entry.floating:
                self.paths[f"{base}/versions/{{version}}"] = {"post": self._model_predict(
                    entry, _id("model_predict", name, "version"), f"Predict with a version of model {name}",
                    "The version its backend serves, asked for by number (the schemas are those of the version "
                    "it serves by default).", [_version_parameter()])}
            else:
                self.paths[f"{base}/versions/{entry.version}"] = {"post": self._model_predict(
                    entry, _id("model_predict", name, f"v{entry.version}"),
                    f"Predict with model {name}:{entry.version}")}
            for label in entry.labels:
                self.paths[f"{base}/labels/{_segment(label)}"] = {"post": self._model_predict(
                    entry, _id("model_predict", name, "label", label), f"Predict with model {name}@{label}",
                    f"Label {label} is version {entry.version}.")}

    def _model_predict(self, entry: ModelEntry, operation_id: str, summary: str, description: str = "",
                       parameters: list[Schema] | None = None) -> Schema:
        params = [*(parameters or []), ref("parameters", "RequestTimeout"), ref("parameters", "RequestId")]
        return self._predict_operation(f"model.{entry.name}.{entry.version}", entry.signature, params,
                                       {"x-model-spec": ref("headers", "ModelSpec")}, operation_id, "models",
                                       summary, description, BACKEND_CALL_STATUSES)

    def _predict_operation(self, component: str, signature: Signature | None, parameters: list[Schema],
                           answer_headers: Schema, operation_id: str, tag: str, summary: str, description: str,
                           statuses: tuple[int, ...]) -> Schema:
        """A native predict operation: JSON in and out (and raw tensors for one numeric input)."""
        headers = {"x-request-id": ref("headers", "RequestId"), "server-timing": ref("headers", "ServerTiming"),
                   **answer_headers}
        if signature is None:
            request: Schema = {"application/json": {"schema": self._schema(f"{component}.request", GENERIC_REQUEST)}}
            answer: Schema = {"description": "The outputs by name.", "headers": headers,
                              "content": {"application/json": {"schema": self._schema(f"{component}.response",
                                                                              GENERIC_RESPONSE)}}}
            description = f"{description} {UNKNOWN_CONTRACT}".strip()
        else:
            request = {"application/json": {
                "schema": self._schema(f"{component}.request", native_request_schema(signature.inputs)),
                "example": native_example(signature.inputs)}}
            answer = {"description": "The outputs by name.", "headers": headers, "content": {"application/json": {
                "schema": self._schema(f"{component}.response", native_response_schema(signature.outputs))}}}
            one_in = _one_numeric(signature.inputs)
            if one_in is not None:
                size = one_in.dtype.numpy.itemsize
                request["application/octet-stream"] = {"schema": {
                    "type": "string", "format": "binary",
                    "description": f"The `{one_in.name}` values as raw little-endian `{one_in.dtype.name}`: "
                                   f"N x {size} bytes, N the product of `x-tensor-shape` (without it, one dimension "
                                   "of N); another length is a 400."}}
                parameters = [*parameters, *parts.binary_parameters(one_in.name, one_in.dtype.name)]
                description = (f"{description} A raw little-endian `{one_in.dtype.name}` tensor may be sent as "
                               "`application/octet-stream`.").strip()
            if _one_numeric(signature.outputs) is not None:
                answer["content"]["application/octet-stream"] = {"schema": {
                    "type": "string", "format": "binary",
                    "description": "To a raw tensor request: the output as raw little-endian values."}}
                answer["headers"] = {**headers, **parts.binary_headers()}
        operation: Schema = {
            "operationId": self._operation_id(operation_id), "tags": [tag], "summary": summary,
            "parameters": parameters,
            "requestBody": {"required": True, "description": BODY_ENCODING, "content": request},
            "responses": {"200": answer},
        }
        if description:
            operation["description"] = description
        return self._client(operation, statuses)

    # ------------------------------------------------------------ TF Serving's REST API

    def _tfserving_model(self, name: str, versions: tuple[ModelEntry, ...]) -> None:
        base = f"/v1/models/{_segment(name)}"
        self._tfserving_routes(base, versions[-1], (name,), f"model {name}")
        for entry in versions:
            if entry.floating:
                self._tfserving_routes(f"{base}/versions/{{version}}", entry, (name, "version"),
                                       f"a version of model {name}", [_version_parameter()])
            else:
                self._tfserving_routes(f"{base}/versions/{entry.version}", entry, (name, f"v{entry.version}"),
                                       f"model {name}:{entry.version}")
            for label in entry.labels:
                self._tfserving_routes(f"{base}/labels/{_segment(label)}", entry, (name, "label", label),
                                       f"model {name}@{label}")

    def _tfserving_routes(self, path: str, entry: ModelEntry, route: tuple[str, ...], what: str,
                          parameters: list[Schema] | None = None) -> None:
        params = [*(parameters or []), ref("parameters", "RequestTimeout"), ref("parameters", "RequestId")]
        component = f"tfserving.{entry.name}.{entry.version}"
        signature = entry.signature
        headers = {"x-request-id": ref("headers", "RequestId"), "server-timing": ref("headers", "ServerTiming"),
                   "x-model-spec": ref("headers", "ModelSpec")}
        description = "The row form (`instances`) or the columnar form (`inputs`), as TF Serving takes them."
        if signature is None:
            body: Schema = {"schema": self._schema(f"{component}.request", GENERIC_TFSERVING_REQUEST)}
            answer_schema = self._schema(f"{component}.response", GENERIC_TFSERVING_RESPONSE)
            description = f"{description} {UNKNOWN_CONTRACT}"
        else:
            answer_forms = tfserving_response_forms(signature.outputs)
            # A row request to a model with a scalar output is refused (TF Serving writes no rows of it).
            examples = {form: value for form, value in tfserving_examples(signature.inputs).items()
                        if form != "row" or "row" in answer_forms}
            forms = {form: schema for form, schema in tfserving_request_forms(signature.inputs).items()
                     if form != "row" or "row" in answer_forms}
            body = {"schema": self._union(f"{component}.request", forms, tfserving_request_schema(signature.inputs))}
            if examples:
                body["examples"] = {form: {"summary": f"the {form} form", "value": value}
                                    for form, value in examples.items()}
            answer_schema = self._union(f"{component}.response", answer_forms,
                                        tfserving_response_schema(signature.outputs))
        self.paths[f"{path}:predict"] = {"post": self._client({
            "operationId": self._operation_id(_id("tfserving_predict", *route)), "tags": ["tensorflow-serving"],
            "summary": f"Predict with {what} (TF Serving)", "description": description, "parameters": params,
            "requestBody": {"required": True, "description": BODY_ENCODING, "content": {"application/json": body}},
            "responses": {"200": {"description": "`predictions` for a row request, `outputs` for a columnar one."
                                                 + (NON_FINITE if _floats_out(signature) else ""),
                                  "headers": headers, "content": {"application/json": {"schema": answer_schema}}}},
        }, BACKEND_CALL_STATUSES, tf_serving=True)}
        offers = entry.capabilities
        for method, schema in (("classify", "TFClassifyResponse"), ("regress", "TFRegressResponse")):
            takes = _method_description(entry, method)
            if method in offers and takes is not None:
                self.paths[f"{path}:{method}"] = {"post": self._client({
                    "operationId": self._operation_id(_id(f"tfserving_{method}", *route)),
                    "tags": ["tensorflow-serving"], "summary": f"{method.capitalize()} with {what} (TF Serving)",
                    "description": takes, "parameters": params,
                    "requestBody": {"required": True, "description": BODY_ENCODING, "content": {"application/json": {
                        "schema": ref("schemas", "TFExamplesRequest")}}},
                    "responses": {"200": {"description": "The results, one per example.",
                                          "headers": {"x-request-id": ref("headers", "RequestId"),
                                                      "server-timing": ref("headers", "ServerTiming")},
                                          "content": {"application/json": {"schema": ref("schemas", schema)}}}},
                }, BACKEND_CALL_STATUSES, tf_serving=True)}
        status_statuses = (400, 404, 500, 502, 503, 504, *BACKEND_STATUSES)
        if "status" in offers:
            self.paths[path] = {"get": self._client({
                "operationId": self._operation_id(_id("tfserving_status", *route)), "tags": ["tensorflow-serving"],
                "summary": f"The status of {what} (TF Serving)", "parameters": params,
                "responses": {"200": _json_answer("Each version's state.", "TFModelStatus")},
            }, status_statuses, tf_serving=True)}
        if "metadata" in offers:
            self.paths[f"{path}/metadata"] = {"get": self._client({
                "operationId": self._operation_id(_id("tfserving_metadata", *route)), "tags": ["tensorflow-serving"],
                "summary": f"The metadata of {what} (TF Serving)", "parameters": params,
                "responses": {"200": _json_answer("Its signatures.", "TFModelMetadata")},
            }, status_statuses, tf_serving=True)}

    # ------------------------------------------------------------ the Open Inference Protocol

    def _open_inference(self) -> None:
        """/v2 (gateway/routes/v2.py): generic paths; a model's inputs are in its metadata."""
        def get(operation_id: str, summary: str, responses: Schema, statuses: tuple[int, ...] | None = None,
                parameters: tuple[Schema, ...] = ()) -> Schema:
            operation: Schema = {"operationId": self._operation_id(operation_id), "tags": [oip.TAG[0]],
                                 "summary": summary, "responses": responses}
            if parameters:
                operation["parameters"] = list(parameters)
            if statuses is None:  # the server's routes: open, nothing named
                return operation
            return self._client(operation, statuses, prefix=V2)

        self.paths["/v2"] = {"get": get("v2_server_metadata", "The server's name, version and extensions",
                                        {"200": _json_answer("Them.", "V2ServerMetadata")})}
        self.paths["/v2/health/live"] = {"get": get("v2_server_live", "Whether the process answers (200)",
                                                    {"200": oip.empty_answer("Live.")})}
        self.paths["/v2/health/ready"] = {"get": get(
            "v2_server_ready", "Whether every application can serve (200), as /health/ready judges it",
            {"200": oip.empty_answer("Ready."), "400": oip.empty_answer("Not ready, or draining.")})}
        lookup = (400, 404, 429, 500, 502, 503, 504, *BACKEND_STATUSES)  # a contract may be asked of a backend
        for base, parameters, what in (("/v2/models/{name}", (oip.PATH_NAME,), ""),
                                       ("/v2/models/{name}/versions/{version}", (oip.PATH_NAME, oip.PATH_VERSION),
                                        "_version")):
            self.paths[base] = {"get": get(
                f"v2_model{what}_metadata", "An application's or model's inputs and outputs",
                {"200": _json_answer("An application's first stage's inputs and last stage's outputs, or a "
                                     "model's contract and the versions served.", "V2ModelMetadata")},
                lookup, parameters)}
            self.paths[f"{base}/ready"] = {"get": get(
                f"v2_model{what}_ready", "Whether the application or model version is ready (200)",
                {"200": oip.empty_answer("Ready."), "400": oip.empty_answer("Not ready.")}, (404,), parameters)}
            self.paths[f"{base}/infer"] = {"post": self._client({
                "operationId": self._operation_id(f"v2_model{what}_infer"), "tags": [oip.TAG[0]],
                "summary": "Inference with an application or model", "description": oip.INFER_DESCRIPTION,
                "parameters": [*parameters, oip.HEADER_PARAMETER, ref("parameters", "RequestTimeout"),
                               ref("parameters", "RequestId"), ref("parameters", "RouteKey")],
                "requestBody": oip.infer_body(),
                "responses": {"200": oip.infer_answer()},
            }, BACKEND_CALL_STATUSES, prefix=V2)}

    # ------------------------------------------------------------ the gateway's own routes

    def _listing(self) -> None:
        self.paths["/gateway/applications"] = {"get": self._client({
            "operationId": self._operation_id("list_applications"), "tags": ["listing"],
            "summary": "The applications this caller may call, with their plans",
            "responses": {"200": _json_answer("Their plans, by name.", "ApplicationList")},
        }, (), named=False)}  # a key lists what it may call, never refused
        self.paths["/gateway/models"] = {"get": self._client({
            "operationId": self._operation_id("list_models"), "tags": ["listing"],
            "summary": "The model versions this caller may call",
            "responses": {"200": _json_answer("Each version's state and contract, by name and version.",
                                              "ModelList")},
        }, (), named=False)}

    def _health(self) -> None:
        self.paths["/health/live"] = {"get": {
            "operationId": self._operation_id("health_live"), "tags": ["health"],
            "summary": "Whether the process answers",
            "responses": {"200": _json_answer("It does.", "Live")}}}
        self.paths["/health/ready"] = {"get": {
            "operationId": self._operation_id("health_ready"), "tags": ["health"],
            "summary": "Whether every application can serve",
            "responses": {"200": _json_answer("Every application is ready.", "Ready"),
                          "503": _json_answer("An application is not ready, or the gateway is draining.", "Ready")}}}
        self.paths["/metrics"] = {"get": {
            "operationId": self._operation_id("metrics"), "tags": ["health"],
            "summary": "Prometheus metrics",
            "responses": {"200": {"description": f"Prometheus' text format (`{CONTENT_TYPE_LATEST}`).",
                                  "headers": {"x-request-id": ref("headers", "RequestId")},
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}}}

    def _admin(self) -> None:
        tokens = self.catalog.admin_tokens
        who = ("Needs an admin token." if tokens else
               "Answers loopback clients only (no admin token is configured).")
        refused = (401,) if tokens else (403,)  # gateway.auth.check_admin: a token or loopback
        security = {"security": list(ADMIN_SECURITY)} if tokens else {}
        reload_answer = {"description": "", "headers": {"x-request-id": ref("headers", "RequestId")},
                         "content": {"application/json": {"schema": ref("schemas", "ReloadResult")}}}
        self.paths["/admin/reload"] = {"post": {
            "operationId": self._operation_id("admin_reload"), "tags": ["admin"],
            "summary": "Re-read the config directory and swap to it",
            "description": f"All or nothing: the old config serves on when the new one is refused. {who}",
            **security,
            "responses": {
                "200": {**reload_answer, "description": "Applied."},
                "422": {**reload_answer, "description": "Refused: a manifest is invalid (file:line) or a new or "
                                                        "changed model does not load."},
                "500": {**reload_answer, "description": "The reload failed on a fault; the old config serves on."},
                "503": {**reload_answer, "description": "The gateway is stopping."},
                "504": {**reload_answer, "description": "With several workers: the parent did not answer in time."},
                **error_refs(refused)}}}
        self.paths["/gateway/admin/models/{name}/reload-config"] = {"post": {
            "operationId": self._operation_id("admin_reload_config"), "tags": ["admin"],
            "summary": "Hand the TF Serving server behind a model a new ModelServerConfig",
            "description": f"Its models' contracts are then discovered again. {who}",
            **security,
            "parameters": [{"name": "name", "in": "path", "required": True, "description": "A model's name.",
                            "schema": {"type": "string"}}, ref("parameters", "RequestTimeout")],
            "requestBody": {"required": True, "description": BODY_ENCODING, "content": {"application/json": {
                "schema": ref("schemas", "ModelServerConfig")}}},
            "responses": _reload_config_responses(refused)}}

        self._admin_changes(who, security, refused)

    def _admin_changes(self, who: str, security: Schema, refused: tuple[int, ...]) -> None:
        """Uploads, applies and deletes (gateway/routes/admin_upload.py, admin_apply.py)."""
        changed = f"One atomic change of the config directory, served at once and after a restart. {who}"
        read_only = (409,)  # a read-only config directory (a ConfigMap), a model version in use
        name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
        self.paths["/gateway/admin/models"] = {"post": {
            "operationId": self._operation_id("admin_upload_model"), "tags": ["admin"],
            "summary": "Upload a model folder as the model's next version",
            "description": "The body is the folder as a gzip tar (sent as application/gzip or "
                           "application/octet-stream): serving.yaml at its root and the files its "
                           "`payload` names. Stored as `models/<name>/<N>/` (N: the highest version + 1), its "
                           "environment built with its install-command, its runtime started. With `Accept: "
                           "application/x-ndjson` the answer streams progress events, one JSON object per line, "
                           f"the last one `done` or `error` with the outcome's status. {changed}",
            **security,
            # Documented as octet-stream, which client generators take (application/gzip is taken too).
            "requestBody": {"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}},
            "responses": {"201": _json_answer("Stored, built and serving.", "UploadedModel"),
                          # No content listed: client generators take no NDJSON (each line is an UploadEvent).
                          "200": {"description": "With Accept: application/x-ndjson: the progress events, one "
                                                 "UploadEvent (JSON) per line.",
                                  "headers": {"x-request-id": ref("headers", "RequestId")}},
                          **error_refs((400, 408, 413, 415, 422, 500, 503, *read_only, *refused))}}}
        self.paths["/gateway/admin/apply"] = {"post": {
            "operationId": self._operation_id("admin_apply"), "tags": ["admin"],
            "summary": "Apply Application and remote Model manifests",
            "description": "YAML documents (`---`-separated), validated as at start-up (errors name the "
                           "`file` given, and the line), applied all together or not at all. With "
                           f"`dry_run=true` nothing changes: the answer says what would. {changed}",
            **security,
            "parameters": [{"name": "dry_run", "in": "query", "required": False, "schema": {"type": "boolean"},
                            "description": "Only say what the apply would do (and which changes break callers)."}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": ref("schemas", "ApplyRequest")}}},
            "responses": {"200": _json_answer("Applied (or, with dry_run, what would be).", "ApplyResult"),
                          **error_refs((400, 413, 415, 422, 500, 503, *read_only, *refused))}}}
        deleted = _json_answer("Deleted.", "Deleted")
        self.paths["/gateway/admin/applications/{name}"] = {"delete": {
            "operationId": self._operation_id("admin_delete_application"), "tags": ["admin"],
            "summary": "Delete an application", "description": changed, **security,
            "parameters": [{**name, "description": "An application's name."}],
            "responses": {"200": deleted, **error_refs((404, 422, 500, 503, *read_only, *refused))}}}
        self.paths["/gateway/admin/models/{name}/versions/{version}"] = {"delete": {
            "operationId": self._operation_id("admin_delete_model"), "tags": ["admin"],
            "summary": "Delete a model version",
            "description": f"Refused (409) while an application uses it, also as the highest version of a model "
                           f"it names without one. {changed}", **security,
            "parameters": [{**name, "description": "A model's name."},
                           {"name": "version", "in": "path", "required": True,
                            "schema": {"type": "integer", "minimum": 0}}],
            "responses": {"200": deleted, **error_refs((404, 422, 500, 503, *read_only, *refused))}}}

    def _documents(self) -> None:
        def document(path: str, operation_id: str, summary: str, media: str, schema: Schema) -> None:
            self.paths[path] = {"get": {
                "operationId": self._operation_id(operation_id), "tags": ["documents"], "summary": summary,
                "responses": {"200": {"description": "The document, for what the presented API key may call.",
                                      "headers": {"x-request-id": ref("headers", "RequestId")},
                                      "content": {media: {"schema": schema}}}}}}

        document("/openapi.json", "openapi_json", "This document (OpenAPI 3.1)", "application/json",
                 {"type": "object"})
        document("/openapi.yaml", "openapi_yaml", "This document as YAML", "application/yaml", {"type": "object"})
        document("/openapi-3.0.json", "openapi_30_json", "This document in OpenAPI 3.0", "application/json",
                 {"type": "object"})
        self.paths["/docs"] = {"get": {
            "operationId": self._operation_id("docs"), "tags": ["documents"],
            "summary": "The interactive documentation page",
            "responses": {"200": {"description": "Swagger UI on this document, served by the gateway.",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}}}}


def _reload_config_responses(refused: tuple[int, ...]) -> Schema:
    """The server's own status answers as its HTTP status (ReloadConfigAnswer: every one of the
    gRPC table, its 401, 403 and 499 too); the gateway's refusals, an Error; a status both may
    give, either."""
    answered = {"200": _json_answer("The server took it.", "ReloadConfigAnswer")}
    server = {kind.status for kind in BACKEND_ERRORS.values()} | {502}  # 502: a code outside the table
    gateway_errors = {*BACKEND_CALL_STATUSES, *refused}
    for status in sorted(server | gateway_errors):
        answer = ref("schemas", "ReloadConfigAnswer")
        if status in server and status in gateway_errors:
            answered[str(status)] = {
                "description": f"The server refused it (its status), or: {HTTPStatus(status).phrase}.",
                "headers": {"x-request-id": ref("headers", "RequestId")},
                "content": {"application/json": {"schema": {"oneOf": [answer, ref("schemas", "Error")]}}}}
        elif status in server:
            answered[str(status)] = {"description": f"The server refused it ({_phrase(status)}).",
                                     "headers": {"x-request-id": ref("headers", "RequestId")},
                                     "content": {"application/json": {"schema": answer}}}
        else:
            answered.update(error_refs((status,)))
    return answered


def _method_description(entry: ModelEntry, method: str) -> str | None:
    """What `:classify` / `:regress` of `entry` answers for, None when no signature of its
    takes it (TF Serving's Classify and Regress refuse another method's signature)."""
    full = {"classify": CLASSIFY_METHOD, "regress": REGRESS_METHOD}[method]
    if entry.methods is None:
        return (f"Answers only for a signature whose method is `{full}` (TF Serving refuses another with "
                "400); this model's signatures are not known yet.")
    names = [name for name, kind in entry.methods if kind == full]
    if not names:
        return None
    default = entry.signature.name if entry.signature is not None else None
    named = ", ".join(f"`{name}`" for name in names)
    return (f"Answers for its `{full}` signatures: {named}"
            + ("." if default in names else " (name one in `signature_name`)."))


def _phrase(status: int) -> str:
    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "CANCELLED"  # 499


def _json_answer(description: str, schema: str) -> Schema:
    return {"description": description, "headers": {"x-request-id": ref("headers", "RequestId")},
            "content": {"application/json": {"schema": ref("schemas", schema)}}}


def _id(kind: str, *parts: str) -> str:
    """The operationId of a route: `kind` (one of `ID_KINDS`, none of which begins another's
    `kind_`), then `_` and the parts (names, `v<N>`, `label`...), each escaped, joined by `__`. A
    function of the route alone, and no two routes alike: `increment_app` is
    `predict_increment_app`, model `m` version 1 `model_predict_m__v1`, model `m_v1`
    `model_predict_m_v1`."""
    if kind not in ID_KINDS:
        raise ValueError(f"{kind!r} is not one of the operationId kinds")
    return kind + ("_" + "__".join(_escaped(part) for part in parts) if parts else "")


# The kinds of operationIds made of names (the others are fixed words such as `list_models`): each
# is followed by `_`, and none is the start of another's.
ID_KINDS = frozenset({"predict", "get_application", "get_model", "model_predict", "tfserving_predict",
                      "tfserving_classify", "tfserving_regress", "tfserving_status", "tfserving_metadata"})


def _escaped(name: str) -> str:
    """`name` in an identifier, one to one: letters and digits as they are, `_` as it is where a
    letter follows it (and it is not first), else `_2`; `.` is `_0`, `-` `_1`, any other character
    `_3` and its code point in six hex digits. Readable for the usual names (`increment_app`),
    and an escaped name never holds `__` nor ends with `_`, so `__` between parts reads one way."""
    out = []
    for index, char in enumerate(name):
        if char.isascii() and char.isalnum():
            out.append(char)
        elif char == "_" and 0 < index < len(name) - 1 and name[index + 1].isascii() and name[index + 1].isalpha():
            out.append("_")
        else:
            out.append(_ESCAPES.get(char) or f"_3{ord(char):06x}")
    return "".join(out)


def _segment(name: str) -> str:
    """A name as one literal path segment (braces and slashes percent-encoded)."""
    return quote(name, safe="-._~:@!$&'()*+,;=")


def _version_parameter() -> Schema:
    return {"name": "version", "in": "path", "required": True, "description": "A version its backend serves.",
            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}}


def _version_text(entry: ModelEntry) -> str:
    return "the backend's latest" if entry.floating else f"version {entry.version}"


def _floats_out(signature: Signature | None) -> bool:
    """Whether an answer may carry non-finite floats (any output of a contract not known yet)."""
    return signature is None or any(spec.dtype.json_kind in (JsonKind.FLOAT, JsonKind.COMPLEX)
                                    for spec in signature.outputs.values())


def _one_numeric(specs: Any) -> TensorSpec | None:
    """The only tensor of `specs` when there is one and it is numeric (the binary path)."""
    if len(specs) != 1:
        return None
    spec: TensorSpec = next(iter(specs.values()))
    return spec if spec.dtype.is_numeric else None
