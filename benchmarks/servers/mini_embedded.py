"""Reference mini-gateway for the embedded runtime (NOT the project): Ceiling A's front end +
one TF Serving Predict per request over the local wire to a runtime process.

POST /gateway/applications/<name> {"number": [...]} -> TensorProto (tensor_content) ->
Predict on the Unix socket $RUNTIME_SOCKETS/<name>.sock (the gateway's own local-wire client,
gateway.backends.local.LocalChannel; a runtime per model, started with `python -m runtime serve
MODEL_DIR --local-socket PATH`) -> JSON. No contract, validation, metrics, access log, call
sharing or request id: the least any gateway that keeps its models in a process of their own
has to do per request, where F (the gateway with its embedded runtime) does all of those.
Run: RUNTIME_SOCKETS=/tmp/sockets uvicorn servers.mini_embedded:app --port 8900 ...
"""
import os

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from gateway.backends.local import LocalChannel
from protos.services import TF_PREDICT
from protos.tensorflow import tensor_pb2, types_pb2
from protos.tensorflow_serving.predict_pb2 import PredictRequest

NP = {types_pb2.DT_FLOAT: np.float32, types_pb2.DT_INT32: np.int32}
SOCKETS = os.environ.get("RUNTIME_SOCKETS", "/tmp")
channels: dict[str, LocalChannel] = {}


def to_tensor(values: list) -> tensor_pb2.TensorProto:
    dtype = types_pb2.DT_INT32 if values and isinstance(values[0], int) else types_pb2.DT_FLOAT
    array = np.asarray(values, dtype=NP[dtype])
    tensor = tensor_pb2.TensorProto(dtype=dtype, tensor_content=array.tobytes())
    tensor.tensor_shape.dim.add(size=array.size)
    return tensor


async def infer(request):
    body = orjson.loads(await request.body())
    predict = PredictRequest(inputs={name: to_tensor(values) for name, values in body.items()})
    name = predict.model_spec.name = request.path_params["name"]
    channel = channels.get(name) or channels.setdefault(name, LocalChannel(f"{SOCKETS}/{name}.sock", name))
    reply = await channel.call(TF_PREDICT, predict, 30.0)
    out = {name: np.frombuffer(tensor.tensor_content, dtype=NP[tensor.dtype]) if tensor.tensor_content
           else np.asarray(tensor.int_val or tensor.float_val, dtype=NP[tensor.dtype])
           for name, tensor in reply.outputs.items()}
    return Response(orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


app = Starlette(routes=[Route("/gateway/applications/{name}", infer, methods=["POST"])])
