"""A model's signatures with TF Serving's gRPC API: `python grpcMetadata.py [-m Toy] [-v 1]`.

Prints the GetModelMetadataResponse as TF Serving's client does (the signature_def Any packed);
`--decode` prints the SignatureDefMap inside it instead.
"""

from __future__ import annotations

import sys

import tfs_client  # first: it puts the generated stubs on sys.path

# isort: split
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc


def main() -> int:
    arguments = tfs_client.parser(__doc__.splitlines()[0])
    arguments.add_argument("-m", "--model", default="Toy", help="model name (default Toy)")
    which = arguments.add_mutually_exclusive_group()
    which.add_argument("-v", "--version", type=int, help="model version (default: the latest)")
    which.add_argument("-l", "--label", help="model version label")
    arguments.add_argument("--decode", action="store_true", help="print the SignatureDefMap unpacked")
    options = arguments.parse_args()
    message = get_model_metadata_pb2.GetModelMetadataRequest()
    message.model_spec.name = options.model
    if options.version is not None:
        message.model_spec.version.value = options.version
    elif options.label is not None:
        message.model_spec.version_label = options.label
    message.metadata_field.append("signature_def")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(tfs_client.channel(options))
    try:
        response = stub.GetModelMetadata(message, timeout=options.timeout,
                                         metadata=tfs_client.metadata(options.api_key))
    except tfs_client.grpc.RpcError as error:
        return tfs_client.fail(error)
    if options.decode:
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        print(get_model_metadata_pb2.GetModelMetadataResponse(model_spec=response.model_spec), end="")
        print(signatures, end="")
    else:
        print(response, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
