"""The Open Inference Protocol's (KServe v2) routes in the OpenAPI document (gateway/routes/v2.py):
generic paths (`{name}`, `{version}`), the protocol's bodies as schemas. The inputs a model takes
are its contract's, which its metadata route answers; the schemas here are the protocol's."""

from __future__ import annotations

from gateway.oip_binary import HEADER_LENGTH
from gateway.openapi.responses import Schema, ref
from tensorcodecs.dtypes import OIP_DATATYPES

TAG = ("open-inference-protocol", "The Open Inference Protocol (KServe v2) REST API (/v2): every application and "
       "model, JSON tensors and the binary tensor extension, errors as `{\"error\": \"...\"}`.")
PATH_NAME: Schema = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
                     "description": "An application's name (first), else a model's."}
PATH_VERSION: Schema = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
                        "description": "A model's version number or version label (applications have none)."}
HEADER_PARAMETER: Schema = {
    "name": HEADER_LENGTH, "in": "header", "required": False,
    "description": "The binary tensor extension: the body's first N bytes are the JSON request, the rest the "
                   "bytes of the inputs whose `parameters.binary_data_size` is set, in input order.",
    "schema": {"type": "integer", "minimum": 0}}
INFER_DESCRIPTION = (
    "Inputs are checked against the contract (GET the model's metadata for it): every input once, its datatype "
    "the contract's, its shape fitting the contract's; `data` flat or nested as the shape, BYTES as text (or "
    "base64 with `parameters.content_type: \"base64\"`). `outputs` asks for some outputs (unknown names are a "
    "400), `parameters.binary_data: true` on one (or `binary_data_output: true` for the request) answers it in "
    "the binary part: then the answer is `application/octet-stream` with `Inference-Header-Content-Length`. "
    "Answers write `data` flat, NaN and Infinity as null, BYTES that are not UTF-8 as base64 (with "
    "`parameters.content_type: \"base64\"`).")
_PARAMETERS: Schema = {"type": "object", "description": "Protocol parameters (`binary_data_size`, `binary_data`, "
                                                      "`binary_data_output`, `content_type`)."}
_SHAPE: Schema = {"type": "array", "items": {"type": "integer", "minimum": 0}}


def schemas() -> dict[str, Schema]:
    """The protocol's bodies (its REST spec), and its error."""
    datatype: Schema = {"type": "string", "enum": list(OIP_DATATYPES)}
    metadata_tensor: Schema = {
        "type": "object", "required": ["name", "datatype", "shape"], "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "datatype": datatype,
                       "shape": {"type": "array", "items": {"type": "integer", "minimum": -1},
                                 "description": "-1 for a size (or, as [-1], a shape) of any size."}}}
    return {
        "V2Error": {"type": "object", "required": ["error"], "additionalProperties": False,
                    "description": "The Open Inference Protocol's error body: one message, which begins with "
                                   "the field at fault when one is known (`inputs[0].data[3]: ...`).",
                    "properties": {"error": {"type": "string"}}},
        "V2ServerMetadata": {
            "type": "object", "required": ["name", "version", "extensions"], "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                           "extensions": {"type": "array", "items": {"type": "string"}}}},
        "V2ModelMetadata": {
            "type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string"},
                           "versions": {"type": "array", "items": {"type": "string"}},
                           "platform": {"type": "string", "description": "`gateway-application` for an "
                                        "application, else the model's backend protocol (`embedded`, ...)."},
                           "inputs": {"type": "array", "items": metadata_tensor},
                           "outputs": {"type": "array", "items": metadata_tensor}}},
        "V2InferenceRequest": {
            "type": "object", "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": _PARAMETERS,
                "inputs": {"type": "array", "items": {
                    "type": "object", "required": ["name", "shape", "datatype"],
                    "properties": {"name": {"type": "string"}, "shape": _SHAPE, "datatype": datatype,
                                   "parameters": _PARAMETERS,
                                   "data": {"description": "The elements, flat or nested as the shape."}}}},
                "outputs": {"type": "array", "items": {
                    "type": "object", "required": ["name"],
                    "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS}}}}},
        "V2InferenceResponse": {
            "type": "object", "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
                "parameters": _PARAMETERS,
                "outputs": {"type": "array", "items": {
                    "type": "object", "required": ["name", "shape", "datatype"],
                    "properties": {"name": {"type": "string"}, "shape": _SHAPE, "datatype": datatype,
                                   "parameters": _PARAMETERS,
                                   "data": {"type": "array", "items": {},
                                            "description": "The elements, flat (numbers, booleans or text)."}}}}}},
    }


def empty_answer(description: str) -> Schema:
    """A health answer: its status is the answer, its body empty."""
    return {"description": description, "headers": {"x-request-id": ref("headers", "RequestId")}}


def infer_body() -> Schema:
    return {"required": True, "description": "JSON, or the binary tensor extension (with "
                                             f"`{HEADER_LENGTH}`); any content type is taken, as Triton takes "
                                             "it. May be sent gzip-compressed.",
            "content": {"application/json": {"schema": ref("schemas", "V2InferenceRequest")},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}


def infer_answer() -> Schema:
    return {"description": "The outputs (with a binary part when one was asked binary).",
            "headers": {"x-request-id": ref("headers", "RequestId"),
                        "Server-Timing": ref("headers", "ServerTiming"),
                        HEADER_LENGTH: {"description": "With a binary part: the length of the JSON before it.",
                                        "schema": {"type": "integer", "minimum": 0}}},
            "content": {"application/json": {"schema": ref("schemas", "V2InferenceResponse")},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
