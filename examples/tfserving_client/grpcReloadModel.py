"""Reload a TF Serving model's config through the gateway: `python grpcReloadModel.py -m Toy`.

Sends HandleReloadConfigRequest with one model (base path, versions, labels) and the admin token.
"""

from __future__ import annotations

import os
import sys

import tfs_client  # first: it puts the generated stubs on sys.path

# isort: split
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc


def main() -> int:
    arguments = tfs_client.parser(__doc__.splitlines()[0])
    arguments.add_argument("-m", "--model", default="Toy", help="model name (default Toy)")
    arguments.add_argument("-p", "--base-path", help="the model's base path on the server (default /models/<model>)")
    arguments.add_argument("--versions", default="1,2", help="versions to serve, comma-separated (default 1,2)")
    arguments.add_argument("--labels", default="stable=1,canary=2",
                           help="version labels, label=version comma-separated (default stable=1,canary=2)")
    arguments.add_argument("--admin-token", default=os.environ.get("GATEWAY_ADMIN_TOKEN"),
                           help="the gateway's admin token (default: $GATEWAY_ADMIN_TOKEN)")
    arguments.add_argument("--gateway-model", help="the gateway model whose server takes the config, sent as "
                           "x-gateway-model metadata (default: the gateway finds the server of the models listed)")
    options = arguments.parse_args()
    message = model_management_pb2.ReloadConfigRequest()
    model = message.config.model_config_list.config.add()
    model.name = options.model
    model.base_path = options.base_path or f"/models/{options.model}"
    model.model_platform = "tensorflow"
    if options.versions:
        model.model_version_policy.specific.versions.extend(int(v) for v in options.versions.split(","))
    for pair in filter(None, options.labels.split(",")):
        label, version = pair.split("=")
        model.version_labels[label] = int(version)
    extra = [("x-gateway-model", options.gateway_model)] if options.gateway_model else []
    stub = model_service_pb2_grpc.ModelServiceStub(tfs_client.channel(options))
    try:
        response = stub.HandleReloadConfigRequest(message, timeout=options.timeout,
                                                  metadata=tfs_client.metadata(options.admin_token, *extra))
    except tfs_client.grpc.RpcError as error:
        return tfs_client.fail(error)
    if response.status.error_code != 0:
        print(f"model {options.model} was not reloaded: {response.status.error_message}", file=sys.stderr)
        return 1
    print(f"model {options.model} reloaded successfully")
    return 0


if __name__ == "__main__":
    sys.exit(main())
