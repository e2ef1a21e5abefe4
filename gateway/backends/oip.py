"""A backend speaking the Open Inference Protocol (KServe v2) over gRPC
(`inference.GRPCInferenceService`: Triton, MLServer, KServe's runtimes): protocol mapping only.
How calls travel is the transport's (gateway.backends.transports: the pooled channel, retries,
the circuit breaker), how requests share calls the scheduling wrapper's (opt-in `batching:`).

- Predict is one ModelInfer: every input in `raw_input_contents`, one entry per input in order
  (BYTES length-prefixed), or, with the manifest's `contents: typed`, in each input's typed
  `contents` (for servers that take no raw contents); the answer is read from
  `raw_output_contents` or the typed contents, whichever the server used (Triton answers raw to
  a raw request, MLServer typed unless asked raw, and may mix: outputs with no typed contents
  take the raw entries in order). The request id is the call's `id` and x-request-id metadata.
- Versions: a pinned manifest sends its version (`model_version`, a string on the wire), a
  floating one the version a request names ("" when none: the server's choice). The protocol
  has no version labels (the manifests forward none to it) and a model has one contract, which
  the gateway names by the manifest's default signature name; another name is a 400.
- Describe is ModelMetadata, its datatypes read through the dtype table (-1 dims kept); a
  datatype the gateway has no row for (BF16) leaves the model undescribed, the error naming
  the tensor, and so does metadata listing no inputs (MLServer's, for a model whose settings
  declare none: its manifest declares the contract then).
- Health: ServerLive, then ModelReady (of the pinned version; "" when floating).
- A model the server has not loaded (yet) answers NOT_FOUND (Triton, MLServer) or, while it
  loads, UNAVAILABLE (Triton) or MLServer's INVALID_ARGUMENT "... is not ready yet": for the
  manifest's own version these are 503 (the manifest says the model exists), as the TF Serving
  backend answers TF's NOT_FOUND of a model still loading; a version the request named stays
  a 404.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import ClassVar

from grpc import StatusCode

from gateway.backends.base import BackendCall, EffectiveSpec, NDArray, Prediction, Selector, default_signature
from gateway.backends.pool import ChannelPool
from gateway.backends.transports import Metadata, Transport
from gateway.backends.transports import connect as connect_transports
from gateway.errors import BackendUnavailable, BadRequest, GatewayError, NotFound, answer_errors
from gateway.manifests import ModelManifest
from protos.inference.grpc_service_pb2 import (
    InferTensorContents,
    ModelInferRequest,
    ModelInferResponse,
    ModelMetadataRequest,
    ModelMetadataResponse,
    ModelReadyRequest,
    ServerLiveRequest,
)
from protos.services import OIP_MODEL_INFER, OIP_MODEL_METADATA, OIP_MODEL_READY, OIP_SERVER_LIVE
from tensorcodecs import CodecError, Signature, TensorSpec
from tensorcodecs.dtypes import dtype_from_oip
from tensorcodecs.oip_tensors import array_to_contents, array_to_raw, contents_to_array, oip_datatype, raw_to_array

# MLServer's ModelNotReady (an INVALID_ARGUMENT): the model exists and is loading.
_NOT_READY = re.compile(r"\bis not ready yet\b")


class OIPBackend:
    """One model (a pinned version, or every version when floating) behind an Open Inference
    Protocol server; its calls go through `transport`, health checks through `checks` (past
    the circuit breaker: the probe that closes it; default `transport`)."""

    describes = True
    capabilities: ClassVar[frozenset[type]] = frozenset()  # none of the optional calls

    def __init__(self, model: ModelManifest, transport: Transport, checks: Transport | None = None) -> None:
        assert model.backend is not None
        self.target = model.backend.target
        self.label = model.name  # what error answers name (never the target: an internal address)
        self.model_label = f"{model.name}:{model.version}"
        self._malformed_tensor = answer_errors(self.label, self.target, "a malformed tensor")
        self._unusable_metadata = answer_errors(self.model_label, self.target, "unusable metadata")
        self.model_name = model.backend.model_name
        self.version = model.backend.version  # None: floating
        self.pinned_version = "" if self.version is None else str(self.version)
        self.signature_name = default_signature(model)
        self.input_specs: Mapping[str, TensorSpec] = model.signature.inputs
        self.typed = model.backend.contents == "typed"
        self.transport = transport
        self.checks = transport if checks is None else checks

    # ------------------------------------------------------------ requests

    def model_version(self, selector: Selector | None) -> str:
        """The `model_version` to send: the selector's version, else the pinned one ("" when
        floating: the server's choice). A label never reaches a v2 server."""
        if selector is not None and selector.label is not None:
            raise NotFound(f"model {self.label} has no version label {selector.label!r}: a v2 server has no "
                           "labels (name versions with the manifests' version_labels)")
        if selector is not None and selector.version is not None:
            return str(selector.version)
        return self.pinned_version

    def build_request(self, call: BackendCall) -> ModelInferRequest:
        """The ModelInferRequest for `call`: its inputs in order, their contents raw (or typed)."""
        signature_name = call.signature_name
        if signature_name is not None and signature_name != self.signature_name:
            raise BadRequest(f'Serving signature name: "{signature_name}" not found: model {self.label} is '
                             f'served by a v2 server, whose models have one signature, "{self.signature_name}"')
        request = ModelInferRequest(model_name=self.model_name, model_version=self.model_version(call.selector),
                                    id=call.request_id)
        specs = self.input_specs if call.specs is None else call.specs
        raw: list[bytes] = []
        for name, array in call.inputs.items():
            spec = specs.get(name)
            try:
                datatype = spec.dtype.oip if spec is not None else oip_datatype(array)
                if not datatype:
                    raise CodecError(f"the Open Inference Protocol has no datatype for {spec.dtype if spec else ''}")
                tensor = request.inputs.add(name=name, datatype=datatype, shape=array.shape)
                if self.typed:
                    array_to_contents(array, tensor.contents, datatype)
                else:
                    raw.append(array_to_raw(array, datatype))
            except CodecError as error:
                raise BadRequest(f"input {name} cannot be sent to model {self.label}: {error.message}",
                                 field=name) from None
        if raw:
            request.raw_input_contents.extend(raw)
        return request

    def _metadata(self, request_id: str) -> Metadata:
        """The gRPC metadata of a call made for request `request_id`."""
        return (("x-request-id", request_id),) if request_id else ()

    async def predict(self, call: BackendCall) -> Prediction:
        request = self.build_request(call)
        try:
            response = await self.transport.call(OIP_MODEL_INFER, request, call.timeout,
                                                 self._metadata(call.request_id))
        except GatewayError as error:
            raise self._loading(error, call.selector) from None
        return Prediction(self.outputs(response), self._effective(response, request.model_version))

    def outputs(self, response: ModelInferResponse) -> dict[str, NDArray]:
        """The arrays of an answer, from its raw or typed contents (see the module docstring)."""
        tensors = response.outputs
        raw = response.raw_output_contents
        try:
            if not raw:
                takes_raw = [False] * len(tensors)
            elif len(raw) == len(tensors):
                takes_raw = [True] * len(tensors)
            else:  # mixed: the outputs without typed contents take the raw entries in order
                takes_raw = [not _has_contents(tensor.contents) for tensor in tensors]
                if sum(takes_raw) != len(raw):
                    raise CodecError(f"{len(raw)} raw output contents for {len(tensors)} outputs, "
                                     f"{sum(takes_raw)} of them without typed contents")
            outputs: dict[str, NDArray] = {}
            entry = 0
            for tensor, is_raw in zip(tensors, takes_raw, strict=True):
                name = tensor.name
                if name in outputs:
                    raise CodecError("the output is named twice", name)
                if is_raw:
                    outputs[name] = raw_to_array(raw[entry], tensor.datatype, tensor.shape, name)
                    entry += 1
                else:
                    outputs[name] = contents_to_array(tensor.contents, tensor.datatype, tensor.shape, name)
        except CodecError as error:
            raise self._malformed_tensor.translate(error) from None
        return outputs

    def _effective(self, response: ModelInferResponse, sent_version: str) -> EffectiveSpec:
        version = response.model_version or sent_version
        return EffectiveSpec(response.model_name or self.model_name,
                             int(version) if version.isdecimal() else None, self.signature_name)

    def _loading(self, error: GatewayError, selector: Selector | None) -> GatewayError:
        """`error`, or 503 when it says the manifest's own model is not loaded (yet)."""
        unloaded = error.grpc_code is StatusCode.NOT_FOUND and selector is None
        if unloaded or (error.grpc_code is StatusCode.INVALID_ARGUMENT and _NOT_READY.search(error.message)):
            return BackendUnavailable(f"model {self.model_label} is not available on its backend yet: "
                                      f"{error.message}", log_detail=error.log_detail)
        return error

    # ------------------------------------------------------------ contract and health

    async def describe(self, selector: Selector | None, timeout: float,
                       request_id: str = "") -> dict[str, Signature]:
        """The model's one contract, from ModelMetadata, under the default signature name."""
        request = ModelMetadataRequest(name=self.model_name, version=self.model_version(selector))
        try:
            response = await self.transport.call(OIP_MODEL_METADATA, request, timeout, self._metadata(request_id))
        except GatewayError as error:
            raise self._loading(error, selector) from None
        try:
            return {self.signature_name: signature_from_metadata(response, self.signature_name)}
        except CodecError as error:
            raise self._unusable_metadata.translate(error) from None

    async def healthy(self, timeout: float) -> bool:
        """ServerLive, then ModelReady of the model (its pinned version), within `timeout`; a
        healthy answer also closes an open circuit (the check is the probe)."""
        deadline = time.monotonic() + timeout
        try:
            live = await self.checks.call(OIP_SERVER_LIVE, ServerLiveRequest(), timeout)
            if not live.live:
                return False
            ready = await self.checks.call(OIP_MODEL_READY, ModelReadyRequest(name=self.model_name,
                                                                              version=self.pinned_version),
                                           max(deadline - time.monotonic(), 0.001))
        except GatewayError:
            return False
        if ready.ready:
            self.transport.passed_health_check()
        return bool(ready.ready)


def signature_from_metadata(response: ModelMetadataResponse, name: str) -> Signature:
    """The contract a ModelMetadataResponse describes, as signature `name`: each tensor's
    datatype through the dtype table, its shape as given (-1: any size); CodecError naming the
    tensor for a datatype without a row, a dim below -1 or a name given twice. No inputs is a
    CodecError too: a server that lists none does not know them (MLServer, for a model whose
    settings name none), and a contract without inputs would refuse every request."""
    if not response.inputs:
        raise CodecError("no inputs (the server does not know them): declare the model's contract in its manifest")
    return Signature(name, _specs(response.inputs, "input"), _specs(response.outputs, "output"))


def _specs(tensors: Sequence[ModelMetadataResponse.TensorMetadata], kind: str) -> dict[str, TensorSpec]:
    specs: dict[str, TensorSpec] = {}
    for tensor in tensors:
        where = f"{kind} {tensor.name!r}"
        if tensor.name in specs:
            raise CodecError(f"{where} is described twice")
        try:
            dtype = dtype_from_oip(tensor.datatype)
        except CodecError as error:
            raise CodecError(f"{where}: {error.message}") from None
        shape = tuple(int(size) for size in tensor.shape)
        if any(size < -1 for size in shape):
            raise CodecError(f"{where} has shape {list(shape)}: a dimension is a size or -1")
        specs[tensor.name] = TensorSpec(tensor.name, dtype, shape)
    return specs


def _has_contents(contents: InferTensorContents) -> bool:
    return bool(contents.ListFields())


def connect(model: ModelManifest, pool: ChannelPool, *, guarded: bool = True) -> OIPBackend:
    """The backend of `model` on `pool` (gateway.backends.transports.connect: its channel and
    circuit breaker). `guarded=False`: its calls skip the breaker."""
    spec = model.backend
    assert spec is not None
    transports = connect_transports(spec, pool, model.name)
    return OIPBackend(model, transports.calls if guarded else transports.checks, transports.checks)

