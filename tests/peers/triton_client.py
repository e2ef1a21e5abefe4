"""Calls a gateway's v2 front doors with Triton's own client library (`tritonclient.http` and
`tritonclient.grpc`) and prints what each call answered, one JSON object a line. Run by
test_tritonclient.py with the interpreter of .venv-peers-triton (tritonclient pins its own
protobuf), never with the gateway's.

    python triton_client.py HTTP_HOST:PORT GRPC_HOST:PORT
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

# Triton's client, in its own venv only (mypy runs in the gateway's, without it).
import tritonclient.grpc as grpcclient  # type: ignore[import-not-found]
import tritonclient.http as httpclient  # type: ignore[import-not-found]
from tritonclient.utils import InferenceServerException  # type: ignore[import-not-found]

# The test's model `every` (and the application `every_app` over it): one input of each datatype.
TENSORS: dict[str, tuple[np.ndarray[Any, Any], str]] = {
    "f": (np.array([0.5, -1.25, 3.0], dtype=np.float32), "FP32"),
    "i": (np.array([[1, 2], [3, -4]], dtype=np.int32), "INT32"),
    "flag": (np.array([True, False], dtype=bool), "BOOL"),
    "word": (np.array([b"hello", "grüß".encode()], dtype=object), "BYTES"),
}
TARGETS = [("every_app", ""), ("every", ""), ("every", "1")]


def plain(value: Any) -> Any:
    """A JSON-friendly copy of an answer (arrays as lists, bytes as text)."""
    if isinstance(value, np.ndarray):
        return [plain(item) for item in value.tolist()] if value.ndim else plain(value.item())
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, bytes):
        return value.decode()
    return value


def emit(**row: Any) -> None:
    print(json.dumps(row), flush=True)


def answer_of(call: Any) -> dict[str, Any]:
    """{"answer": what `call()` returned}, or {"error": its InferenceServerException's message}:
    one call failing leaves the calls after it to run."""
    try:
        return {"answer": call()}
    except InferenceServerException as error:
        return {"error": str(error.message())}


def error_of(call: Any) -> str | None:
    """None when `call()` succeeds, else the InferenceServerException's message."""
    try:
        call()
    except InferenceServerException as error:
        return str(error.message())
    return None


def http_calls(url: str) -> None:
    client = httpclient.InferenceServerClient(url=url)
    emit(door="http", call="live", answer=client.is_server_live())
    emit(door="http", call="ready", answer=client.is_server_ready())
    emit(door="http", call="server_metadata", answer=client.get_server_metadata())
    for name, version in [*TARGETS, ("no_such_model", "")]:
        emit(door="http", call="model_ready", name=name, version=version,
             **answer_of(lambda: client.is_model_ready(name, version)))  # noqa: B023 (called at once)
    for name, version in TARGETS:
        emit(door="http", call="model_metadata", name=name, version=version,
             answer=client.get_model_metadata(name, version))
        for binary in (False, True):
            inputs = []
            for key, (array, datatype) in TENSORS.items():
                tensor = httpclient.InferInput(key, list(array.shape), datatype)
                tensor.set_data_from_numpy(array, binary_data=binary)
                inputs.append(tensor)
            outputs = [httpclient.InferRequestedOutput(key, binary_data=binary) for key in TENSORS]
            result = client.infer(name, inputs, model_version=version, outputs=outputs, request_id="req-7")
            response = result.get_response()
            emit(door="http", call="infer", name=name, version=version, binary=binary,
                 id=response.get("id"), model_name=response.get("model_name"),
                 datatypes={out["name"]: out["datatype"] for out in response["outputs"]},
                 # Outputs sent as binary carry binary_data_size in their parameters, not data.
                 binary_outputs=sorted(out["name"] for out in response["outputs"] if "data" not in out),
                 answer={key: plain(result.as_numpy(key)) for key in TENSORS})
    wrong = [httpclient.InferInput(key, list(array.shape), datatype) for key, (array, datatype) in TENSORS.items()]
    wrong[0] = httpclient.InferInput("f", [3], "INT32")  # every input there, f of the wrong datatype
    for tensor, array in zip(wrong, [np.array([1, 2, 3], dtype=np.int32), *(a for a, _ in list(TENSORS.values())[1:])],
                             strict=True):
        tensor.set_data_from_numpy(array, binary_data=True)
    emit(door="http", call="wrong_datatype", answer=error_of(lambda: client.infer("every_app", wrong)))
    emit(door="http", call="missing_model",
         answer=error_of(lambda: client.get_model_metadata("no_such_model")))
    client.close()


def grpc_calls(url: str) -> None:
    client = grpcclient.InferenceServerClient(url=url)
    emit(door="grpc", call="live", answer=client.is_server_live())
    emit(door="grpc", call="ready", answer=client.is_server_ready())
    emit(door="grpc", call="server_metadata", answer=client.get_server_metadata(as_json=True))
    for name, version in [*TARGETS, ("no_such_model", "")]:
        emit(door="grpc", call="model_ready", name=name, version=version,
             **answer_of(lambda: client.is_model_ready(name, version)))  # noqa: B023 (called at once)
    for name, version in TARGETS:
        emit(door="grpc", call="model_metadata", name=name, version=version,
             answer=client.get_model_metadata(name, version, as_json=True))
        inputs = []
        for key, (array, datatype) in TENSORS.items():
            tensor = grpcclient.InferInput(key, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)  # raw_input_contents
            inputs.append(tensor)
        outputs = [grpcclient.InferRequestedOutput(key) for key in TENSORS]
        result = client.infer(name, inputs, model_version=version, outputs=outputs, request_id="req-7")
        response = result.get_response(as_json=True)
        emit(door="grpc", call="infer", name=name, version=version, binary=True,
             id=response.get("id"), model_name=response.get("model_name"),
             datatypes={out["name"]: out["datatype"] for out in response["outputs"]},
             binary_outputs=sorted(out["name"] for out in response["outputs"]),
             answer={key: plain(result.as_numpy(key)) for key in TENSORS})
    wrong = [grpcclient.InferInput(key, list(array.shape), datatype) for key, (array, datatype) in TENSORS.items()]
    wrong[0] = grpcclient.InferInput("f", [3], "INT32")  # every input there, f of the wrong datatype
    for tensor, array in zip(wrong, [np.array([1, 2, 3], dtype=np.int32), *(a for a, _ in list(TENSORS.values())[1:])],
                             strict=True):
        tensor.set_data_from_numpy(array)
    emit(door="grpc", call="wrong_datatype", answer=error_of(lambda: client.infer("every_app", wrong)))
    emit(door="grpc", call="missing_model",
         answer=error_of(lambda: client.get_model_metadata("no_such_model")))
    client.close()


if __name__ == "__main__":
    http_calls(sys.argv[1])
    grpc_calls(sys.argv[2])
