"""The runtime's gRPC server: TF Serving's PredictionService/Predict and grpc.health.v1.

A synchronous `grpc.server` whose thread pool runs the model function: user functions are
mostly synchronous, and this server answers more calls per core than a grpc.aio one.
"""

from __future__ import annotations

import logging
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from protos.services import TF_PREDICT, TF_PREDICTION_SERVICE
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from runtime.model import InputError, LoadedModel, OutputError

log = logging.getLogger("runtime")

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.so_reuseport", 0),
]


class ModelServer:
    """Serves one loaded model on `host:port` until stopped."""

    def __init__(self, model: LoadedModel, host: str = "127.0.0.1", port: int = 0,
                 threads: int = 8) -> None:
        self.model = model
        self.address = f"{host}:{port}"
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads,
                                                              thread_name_prefix="model"),
                                   options=SERVER_OPTIONS)
        self._health = health.HealthServicer()
        self.port = 0

    def start(self) -> int:
        """Bind, start serving and return the bound port."""
        handlers = {
            TF_PREDICT.name: grpc.unary_unary_rpc_method_handler(
                self._predict,
                request_deserializer=PredictRequest.FromString,
                response_serializer=PredictResponse.SerializeToString,
            ),
        }
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(TF_PREDICTION_SERVICE, handlers),)
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.port = self._server.add_insecure_port(self.address)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.address}")
        self._server.start()
        for service in ("", TF_PREDICTION_SERVICE):
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    def stop(self, grace: float = 5.0) -> threading.Event:
        """Stop accepting calls; in-flight calls get `grace` seconds to finish."""
        self._health.enter_graceful_shutdown()
        return self._server.stop(grace)

    def wait(self) -> None:
        """Block until the server has stopped."""
        self._server.wait_for_termination()

    def _predict(self, request: PredictRequest, context: grpc.ServicerContext) -> PredictResponse:
        manifest = self.model.manifest
        spec = request.model_spec
        if spec.name and spec.name != manifest.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"model {spec.name!r} is not served here "
                          f"(this runtime serves {manifest.name!r})")
        if spec.HasField("version") and spec.version.value != manifest.version:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"model {manifest.name} has no version {spec.version.value}")
        try:
            response = self.model.predict(request)
        except InputError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except OutputError as error:
            log.error("%s", error)
            context.abort(grpc.StatusCode.INTERNAL, str(error))
        except Exception as error:
            log.exception("model %s raised", manifest.name)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
        response.model_spec.name = manifest.name
        response.model_spec.version.value = manifest.version
        response.model_spec.signature_name = spec.signature_name or manifest.signature.name
        return response
