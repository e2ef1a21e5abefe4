"""Calls a gateway's GatewayService with hydro-serving-grpc 3.x's own generated stub and prints
what it answered, one JSON object per call. Run by test_hydrosphere_interop.py with the
interpreter of a venv holding hydro-serving-grpc (protobuf<4), never with the gateway's.

    python hydro_stub_client.py HOST:PORT
"""

from __future__ import annotations

import json
import sys

import grpc

# Hydrosphere's package, in its own venv only (mypy runs in the gateway's, without it).
from hydro_serving_grpc.serving.contract.tensor_pb2 import Tensor, TensorShape  # type: ignore[import-not-found]
from hydro_serving_grpc.serving.contract.types_pb2 import DT_INT32  # type: ignore[import-not-found]
from hydro_serving_grpc.serving.gateway.api_pb2 import GatewayPredictRequest  # type: ignore[import-not-found]
from hydro_serving_grpc.serving.gateway.api_pb2_grpc import GatewayServiceStub  # type: ignore[import-not-found]

CALLS = [
    ("PredictApplication", "increment_app", [1, 2]),
    ("PredictApplication", "canary_app", [41]),
    ("PredictServable", "increment_model:1", [7]),
    ("PredictServable", "increment_numpy-2-wild-flower", [2147483647]),
    ("ShadowlessPredictServable", "increment_numpy:1", [2147483647]),
    ("PredictApplication", "no_such_app", [1]),
    ("PredictServable", "increment_numpy:9", [1]),
]


def main(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = GatewayServiceStub(channel)
        for method, name, values in CALLS:
            tensor = Tensor(dtype=DT_INT32, tensor_shape=TensorShape(dims=[len(values)]), int_val=values)
            request = GatewayPredictRequest(name=name, data={"number": tensor})
            result: dict[str, object]
            try:
                answer = getattr(stub, method)(request, timeout=30)
            except grpc.RpcError as error:
                result = {"code": error.code().name, "details": error.details()}
            else:
                number = answer.outputs["number"]
                result = {"code": "OK", "int_val": list(number.int_val), "dims": list(number.tensor_shape.dims),
                          "dtype": number.dtype}
            print(json.dumps({"method": method, "name": name, **result}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
