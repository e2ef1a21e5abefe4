"""Predict with TF Serving's gRPC API: `python grpcRequest.py -m Toy [-v 2 | -l canary]`.

Sends input_1 = [[1, 2], [1, 3]] (float32) asking for output_1, and prints the PredictResponse.
"""

from __future__ import annotations

import sys

import numpy as np
import tfs_client  # first: it puts the generated stubs on sys.path

# isort: split
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

INPUT = np.array([[1.0, 2.0], [1.0, 3.0]], dtype=np.float32)


def float_tensor(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A float32 TensorProto in tensor_content, as tf.make_tensor_proto makes it."""
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n)
                                                   for n in array.shape])
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape,
                                  tensor_content=array.astype("<f4").tobytes())


def request(model: str, version: int | None, label: str | None, signature: str) -> predict_pb2.PredictRequest:
    """The PredictRequest of the seed's grpcRequest.py."""
    message = predict_pb2.PredictRequest()
    message.model_spec.name = model
    message.model_spec.signature_name = signature
    if version is not None:
        message.model_spec.version.value = version
    elif label is not None:
        message.model_spec.version_label = label
    message.inputs["input_1"].CopyFrom(float_tensor(INPUT))
    message.output_filter.append("output_1")
    return message


def main() -> int:
    arguments = tfs_client.parser(__doc__.splitlines()[0])
    arguments.add_argument("-m", "--model", default="Toy", help="model name (default Toy)")
    which = arguments.add_mutually_exclusive_group()
    which.add_argument("-v", "--version", type=int, help="model version")
    which.add_argument("-l", "--label", help="model version label (stable, canary)")
    arguments.add_argument("-s", "--signature", default="serving_default", help="signature name")
    options = arguments.parse_args()
    stub = prediction_service_pb2_grpc.PredictionServiceStub(tfs_client.channel(options))
    try:
        response = stub.Predict(request(options.model, options.version, options.label, options.signature),
                                timeout=options.timeout, metadata=tfs_client.metadata(options.api_key))
    except tfs_client.grpc.RpcError as error:
        return tfs_client.fail(error)
    print(response, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
