"""Reading and answering an Open Inference Protocol (KServe v2) JSON inference request.

Shared by the /v2 infer route (gateway/routes/v2.py) and the application route's v2 dialect
(gateway/routes/native.py), which read the same body and answer it the same way; the rules
that do not depend on the transport are `gateway.oip_models`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from gateway import oip_models
from gateway.backends import NDArray
from gateway.dataplane import RequestContext
from gateway.errors import BadRequest, CodecErrors, ModelError, codec_errors
from gateway.oip_binary import binary_answer
from tensorcodecs import CodecError
from tensorcodecs.oip_json import BINARY_DATA_OUTPUT, encode_outputs, requested_outputs

_BAD_REQUEST = codec_errors(BadRequest)  # a request's `outputs` or `parameters` the protocol refuses
_UNWRITABLE = CodecErrors(ModelError)  # an answer the protocol has no datatype for (complex)

Wanted = dict[str, bool | None]  # requested outputs with their `binary_data` (None: not said)


def json_response(body: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json",
                    headers=headers)


def request_fields(document: object, context: RequestContext) -> tuple[str | None, object, Wanted | None, bool]:
    """The request's id, inputs, requested outputs (None: all) and `binary_data_output`; its
    other request parameters as `oip_models.request_parameters` takes them."""
    if not isinstance(document, dict):
        raise BadRequest("an inference request is a JSON object with inputs")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("id must be a string", field="id")
    if "inputs" not in document:
        raise BadRequest("an inference request needs inputs", field="inputs")
    parameters = document.get("parameters")
    binary_output = False
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise BadRequest("parameters must be an object", field="parameters")
        binary_output = parameters.get(BINARY_DATA_OUTPUT, False)
        if not isinstance(binary_output, bool):
            raise BadRequest(f"{BINARY_DATA_OUTPUT} must be true or false", field=f"parameters.{BINARY_DATA_OUTPUT}")
        oip_models.request_parameters(parameters, context)
    requested = document.get("outputs")
    try:
        wanted = requested_outputs(requested) if requested is not None else None
    except CodecError as error:
        raise _BAD_REQUEST.translate(error) from None
    return request_id, document["inputs"], wanted, binary_output


def answer(body: dict[str, Any], outputs: Mapping[str, NDArray], wanted: Wanted | None, binary_output: bool,
           headers: dict[str, str], who: str, contracted: bool) -> Response:
    """The answer of `outputs` (the requested ones, checked as `oip_models.chosen` says)."""
    if wanted:
        oip_models.chosen(outputs, list(wanted), who, contracted)
    try:
        items, buffers = encode_outputs(outputs, wanted, binary_output)
    except CodecError as error:
        raise _UNWRITABLE.translate(error) from None
    body["outputs"] = items
    if not buffers:
        return json_response(body, headers)
    return binary_answer(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), buffers, headers)
