"""gRPC Predict forwarded to a TF Serving backend as it came: its tensors are never decoded.

Taken only when nothing needs the arrays: the model's backend is TF Serving itself (not the
embedded runtime's local wire), the model declares no contract (TF Serving checks the inputs
against its own signature, in its words), the request has no `output_filter` (the gateway
checks those first) and the model has no request log (a record holds arrays: such calls are
decoded). The element limit is still read from the shapes (by the caller). The gateway's
concurrency limit, the backend metrics (`gateway_backend_*` with the model and version
labels) and the `backend` timing are kept as the data plane keeps them for a decoded call.
"""

from __future__ import annotations

import time

from gateway.answer_headers import Timing
from gateway.backends.tfserving import TFServingBackend
from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import GatewayError, Overloaded
from gateway.registry import Target
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse


def passes_through(target: Target, request: PredictRequest) -> bool:
    """Whether `request` to `target` may be forwarded undecoded (the rule above)."""
    model = target.model
    return (type(model.backend) is TFServingBackend and not model.manifest.contract_declared
            and not request.output_filter and model.manifest.request_log is None)


async def forward(target: Target, request: PredictRequest, context: RequestContext,
                  dataplane: DataPlane) -> PredictResponse:
    """The backend's answer to `request` (whose model_spec becomes the backend's), counted in
    the data plane's concurrency limit and backend metrics."""
    if dataplane.in_flight >= dataplane.max_concurrency:
        raise Overloaded(f"the gateway is at its limit of {dataplane.max_concurrency} requests in flight")
    model = target.model
    backend = model.backend
    assert isinstance(backend, TFServingBackend)  # passes_through() said so
    name, version = model.manifest.name, _asked_version(target)
    context.labels["model"], context.labels["version"] = name, version
    metrics = dataplane.metrics
    dataplane.in_flight += 1
    started = time.perf_counter()
    try:
        response = await backend.forward_predict(request, target.selector, context.remaining(), context.request_id)
    except GatewayError as error:
        if metrics is not None:
            metrics.backend_errors.labels(name, version, error.grpc_code.name).inc()
        raise
    finally:
        dataplane.in_flight -= 1
        elapsed = time.perf_counter() - started
        if metrics is not None:
            metrics.backend_seconds_child(name, version).observe(elapsed)
        context.timings.append(Timing("backend", elapsed, f"{name}:{version}" if version else name))
    if response.model_spec.HasField("version"):
        context.labels["version"] = str(response.model_spec.version.value)
    return response


def _asked_version(target: Target) -> str:
    """The version label before the backend answers: the one asked, else the manifest's ("" for
    a floating model asked for none), as the data plane labels a decoded call."""
    selector, manifest = target.selector, target.model.manifest
    if selector is not None and selector.version is not None:
        return str(selector.version)
    return "" if manifest.floating or manifest.version is None else str(manifest.version)
