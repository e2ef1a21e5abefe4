"""A model's status with TF Serving's gRPC API: `python grpcModelStatus.py -m Toy_double -v 1`."""

from __future__ import annotations

import sys

import tfs_client  # first: it puts the generated stubs on sys.path

# isort: split
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc


def main() -> int:
    arguments = tfs_client.parser(__doc__.splitlines()[0])
    arguments.add_argument("-m", "--model", default="Toy", help="model name (default Toy)")
    which = arguments.add_mutually_exclusive_group()
    which.add_argument("-v", "--version", type=int, help="model version (default: every version)")
    which.add_argument("-l", "--label", help="model version label")
    options = arguments.parse_args()
    message = get_model_status_pb2.GetModelStatusRequest()
    message.model_spec.name = options.model
    if options.version is not None:
        message.model_spec.version.value = options.version
    elif options.label is not None:
        message.model_spec.version_label = options.label
    stub = model_service_pb2_grpc.ModelServiceStub(tfs_client.channel(options))
    try:
        response = stub.GetModelStatus(message, timeout=options.timeout,
                                       metadata=tfs_client.metadata(options.api_key))
    except tfs_client.grpc.RpcError as error:
        return tfs_client.fail(error)
    print(response, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
