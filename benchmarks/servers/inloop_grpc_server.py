"""The gateway's own in-loop gRPC server (gateway.grpc_server) answering TF Serving's Predict
alone, for benchmarks: row K's handler (every input tensor back with 1 added) on the server the
gRPC front door runs on, with no gateway behind it — the ceiling of that server.

Run from the repository root: PYTHONPATH=$PWD python benchmarks/servers/inloop_grpc_server.py 9503
"""

from __future__ import annotations

import asyncio
import sys

import uvloop
from grpc_health.v1 import health_pb2
from tf_grpc_server import increment  # this folder is on the path of a script run from it

from gateway.grpc_server.call import RpcHandler, ServerCall
from gateway.grpc_server.server import GrpcServer, ServerOptions
from gateway.serving.server import bound_socket
from protos.services import TF_PREDICT
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse


async def predict(raw: bytes, call: ServerCall) -> bytes:
    request = PredictRequest.FromString(raw)
    response = PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for name, tensor in request.inputs.items():
        increment(tensor, response.outputs[name])
    answer: bytes = response.SerializeToString()
    return answer


async def check(raw: bytes, call: ServerCall) -> bytes:
    answer: bytes = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()
    return answer


async def main(port: int) -> None:
    server = GrpcServer({TF_PREDICT.path: RpcHandler(unary=predict),
                         "/grpc.health.v1.Health/Check": RpcHandler(unary=check)},
                        ServerOptions(max_receive_message_length=1 << 30))
    await server.start(bound_socket("127.0.0.1", port, reuse_port=False))
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
