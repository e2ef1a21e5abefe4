"""The seed's grpcRequest.py as TF Serving's users run it: the real `tensorflow-serving-api` stubs and
`tf.make_tensor_proto` / `tf.make_ndarray` (needs `pip install tensorflow tensorflow-serving-api`;
`make test-tf-grpc` builds such an environment in .venv-tf).

`python tf_predict.py -m Toy [-v 2 | -l canary] [--port 8500]` prints the PredictResponse, then one
JSON line: {"model_spec": [name, version, signature_name], "output_1": [[...], ...]}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def main() -> int:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--host", default="127.0.0.1")
    arguments.add_argument("--port", type=int, default=8500, help="the gateway's gRPC port (default 8500)")
    arguments.add_argument("-m", "--model", default="Toy")
    which = arguments.add_mutually_exclusive_group()
    which.add_argument("-v", "--version", type=int)
    which.add_argument("-l", "--label")
    arguments.add_argument("--api-key", default=os.environ.get("GATEWAY_API_KEY"))
    options = arguments.parse_args()
    with grpc.insecure_channel(f"{options.host}:{options.port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = options.model
        request.model_spec.signature_name = "serving_default"
        if options.version is not None:
            request.model_spec.version.value = options.version
        elif options.label is not None:
            request.model_spec.version_label = options.label
        request.inputs["input_1"].CopyFrom(tf.make_tensor_proto(np.array([[1, 2], [1, 3]], dtype=np.float32)))
        request.output_filter.append("output_1")
        metadata = [("authorization", f"Bearer {options.api_key}")] if options.api_key else []
        try:
            response = stub.Predict(request, timeout=30, metadata=metadata)
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(response, end="")
    spec = response.model_spec
    print(json.dumps({"model_spec": [spec.name, spec.version.value, spec.signature_name],
                      "output_1": tf.make_ndarray(response.outputs["output_1"]).tolist()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
