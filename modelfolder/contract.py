"""A kind Model document's `contract`: the function's name and its typed input and output tensors."""

from __future__ import annotations

from modelfolder.yaml_reader import Fields
from tensorcodecs import CodecError, Signature, TensorSpec, lookup_dtype, parse_shape


def parse_contract(fields: Fields, model_name: str) -> Signature:
    """`contract: {name, inputs: {NAME: {type, shape, profile}}, outputs: {...}}`."""
    fields.reject_unknown({"name", "inputs", "outputs"})
    return Signature(
        name=fields.optional("name", str, "predict"),
        inputs=_parse_tensor_specs(fields, "inputs", model_name),
        outputs=_parse_tensor_specs(fields, "outputs", model_name),
    )


def _parse_tensor_specs(fields: Fields, key: str, model_name: str) -> dict[str, TensorSpec]:
    group = fields.nested(key)
    specs: dict[str, TensorSpec] = {}
    for name in group.mapping:
        spec_fields = group.nested(str(name))
        spec_fields.reject_unknown({"shape", "type", "profile"})
        type_name = spec_fields.required("type", str)
        try:
            dtype = lookup_dtype(type_name)
        except CodecError as error:
            raise spec_fields.error("type", f"model {model_name}: {error.message}") from None
        try:
            shape = parse_shape(spec_fields.mapping.get("shape"))
        except CodecError as error:
            raise spec_fields.error("shape", error.message) from None
        profile = spec_fields.optional("profile", str, None)
        specs[str(name)] = TensorSpec(str(name), dtype, shape, profile)
    if not specs:
        raise fields.error(key, "at least one tensor is required")
    return specs
