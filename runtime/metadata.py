"""GetModelMetadata and GetModelStatus answers for the model a runtime serves."""

from __future__ import annotations

from google.protobuf.any_pb2 import Any
from google.protobuf.wrappers_pb2 import StringValue

from modelfolder import ModelDefinition
from protos.services import SIGNATURE_DEF_MAP_TYPE_URL
from protos.tensorflow_serving.get_model_metadata_pb2 import GetModelMetadataResponse, SignatureDefMap
from protos.tensorflow_serving.get_model_status_pb2 import GetModelStatusResponse, ModelVersionStatus
from runtime.errors import InputError
from tensorcodecs.signature_def import SIGNATURE_DEF, signature_to_def

RUNTIME = "runtime"
DEFAULT_SIGNATURE = "serving_default"
STRING_VALUE_TYPE_URL = "type.googleapis.com/google.protobuf.StringValue"


def signature_names(manifest: ModelDefinition) -> tuple[str, ...]:
    """Names a request may use for the model's one signature: its contract name, TF's default
    key, or none at all."""
    return (manifest.signature.name, DEFAULT_SIGNATURE, "")


def metadata_response(manifest: ModelDefinition, fields: list[str]) -> GetModelMetadataResponse:
    """TF Serving's answer: `signature_def` holds a SignatureDefMap; `runtime` (this runtime's
    addition) holds serving.yaml's runtime as a StringValue."""
    if not fields:
        raise InputError("GetModelMetadataRequest must specify at least one metadata_field")
    response = GetModelMetadataResponse()
    _fill_spec(response, manifest)
    for field in fields:
        if field == SIGNATURE_DEF:
            definition = signature_to_def(manifest.signature)
            signatures = SignatureDefMap()
            signatures.signature_def[manifest.signature.name].CopyFrom(definition)
            signatures.signature_def[DEFAULT_SIGNATURE].CopyFrom(definition)
            response.metadata[field].CopyFrom(
                Any(type_url=SIGNATURE_DEF_MAP_TYPE_URL, value=signatures.SerializeToString()))
        elif field == RUNTIME:
            value = StringValue(value=manifest.runtime or "")
            response.metadata[field].CopyFrom(
                Any(type_url=STRING_VALUE_TYPE_URL, value=value.SerializeToString()))
        else:
            raise InputError(f"metadata field {field!r} is not supported "
                             f"(supported: {SIGNATURE_DEF}, {RUNTIME})")
    return response


def status_response(manifest: ModelDefinition) -> GetModelStatusResponse:
    """The one version this runtime serves, AVAILABLE."""
    response = GetModelStatusResponse()
    status = response.model_version_status.add()
    status.version = manifest.version
    status.state = ModelVersionStatus.AVAILABLE
    status.status.SetInParent()
    return response


def _fill_spec(response: GetModelMetadataResponse, manifest: ModelDefinition) -> None:
    response.model_spec.name = manifest.name
    response.model_spec.version.value = manifest.version
    response.model_spec.signature_name = manifest.signature.name
