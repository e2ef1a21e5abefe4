"""A plain grpc.aio model server speaking TensorFlow Serving's Predict, for benchmarks.

The equivalent of the peer harness's Ceiling B (`ceiling_b_grpc_server.py`), but on the wire
of `/tensorflow.serving.PredictionService/Predict` (the project's protos), so that the
gateway can use it as a remote `tensorflow-serving` backend. Every input tensor comes back
as the output of the same name with 1 added, in the encoding it arrived in. Also answers
`grpc.health.v1.Health/Check` (SERVING), which the gateway's readiness uses.

Run from the repository root: PYTHONPATH=$PWD python benchmarks/servers/tf_grpc_server.py 9500
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import numpy as np
from grpc_health.v1 import health_pb2

from protos.services import TF_PREDICT
from protos.tensorflow.tensor_pb2 import TensorProto
from protos.tensorflow.types_pb2 import DT_FLOAT, DT_INT32
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse

NP = {DT_FLOAT: np.float32, DT_INT32: np.int32}


def increment(t: TensorProto, out: TensorProto) -> None:
    out.dtype = t.dtype
    out.tensor_shape.CopyFrom(t.tensor_shape)
    if t.tensor_content:
        out.tensor_content = (np.frombuffer(t.tensor_content, dtype=NP[t.dtype]) + 1).tobytes()
    elif t.dtype == DT_FLOAT:
        out.float_val.extend((np.asarray(t.float_val, np.float32) + 1).tolist())
    else:
        out.int_val.extend((np.asarray(t.int_val, np.int32) + 1).tolist())


async def predict(request: PredictRequest, context: grpc.aio.ServicerContext) -> PredictResponse:
    response = PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    for name, tensor in request.inputs.items():
        increment(tensor, response.outputs[name])
    return response


async def check(request: health_pb2.HealthCheckRequest,
                context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
    return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def main(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", -1),
                                      ("grpc.max_send_message_length", -1)])
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(TF_PREDICT.service, {
            TF_PREDICT.name: grpc.unary_unary_rpc_method_handler(
                predict, request_deserializer=PredictRequest.FromString,
                response_serializer=PredictResponse.SerializeToString)}),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(
                check, request_deserializer=health_pb2.HealthCheckRequest.FromString,
                response_serializer=health_pb2.HealthCheckResponse.SerializeToString)}),
    ))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"tf grpc.aio server listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9500))
