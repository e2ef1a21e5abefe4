"""Kind Application: the stages a request passes through and the models serving each.

Hydrosphere's two shapes: `singular: {model: name:version}`, or `pipeline:` — a list of
stages, each a list of variants `{model: ref, weight: N}` — with `shadow: true` variants that
get copies of the stage's requests (`sample`, `compare`) and take no weight.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gateway.manifests.request_log_kind import parse_request_log
from gateway.manifests.types import (
    DEFAULT_WEIGHT,
    ApplicationManifest,
    CompareSpec,
    ModelRef,
    Selector,
    Stage,
    VariantManifest,
)
from modelfolder import ConfigError, Fields, LineMapping
from modelfolder.definition import NAME

_MODEL_REF = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]*)(?::(\d+)|@([A-Za-z0-9_.-]+))?")
_FIELDS = {"kind", "name", "singular", "pipeline", "timeout_s", "max_concurrency", "allow_variant_override",
           "validate_outputs", "metadata", "request_log"}
_VARIANT_FIELDS = {"model", "weight", "shadow", "sample", "compare"}


def parse_application(doc: LineMapping, path: Path) -> ApplicationManifest:
    """A kind Application document."""
    fields = Fields(doc, path)
    if "kafka" in doc:
        raise fields.error("kafka", "Kafka streaming applications are not supported; call the application "
                           "over HTTP")
    fields.reject_unknown(_FIELDS)
    name = fields.required("name", str)
    if not NAME.fullmatch(name):  # one path segment, as a model's name: /gateway/applications/{name}
        raise fields.error("name", f"{name!r} is not a valid application name (letters, digits, _ . -; "
                           "a letter or digit first)")
    if ("singular" in doc) == ("pipeline" in doc):
        raise ConfigError("an application needs exactly one of `singular` or `pipeline`", fields.where())
    if "singular" in doc:
        singular = fields.nested("singular")
        singular.reject_unknown({"model"})
        model = parse_model_ref(singular.required("model", str), singular.where("model"))
        stages: tuple[Stage, ...] = (Stage((VariantManifest(model, source=singular.where("model")),),
                                          singular.where()),)
    else:
        stages = _pipeline(fields)
    timeout = fields.optional("timeout_s", float, None)
    if timeout is not None and timeout <= 0:
        raise fields.error("timeout_s", "must be greater than 0")
    concurrency = fields.optional("max_concurrency", int, None)
    if concurrency is not None and concurrency < 1:
        raise fields.error("max_concurrency", "must be at least 1")
    metadata = fields.optional("metadata", dict, {})
    for key, value in metadata.items():
        if not isinstance(value, str | int | float | bool):
            raise fields.error("metadata", f"{key}: values are strings, numbers or booleans")
    return ApplicationManifest(name, stages, f"{path}:{doc.line}", timeout, concurrency,
                               fields.optional("allow_variant_override", bool, False),
                               fields.optional("validate_outputs", bool, False), dict(metadata),
                               parse_request_log(fields) if "request_log" in doc else None)


def _pipeline(fields: Fields) -> tuple[Stage, ...]:
    stages_doc = fields.required("pipeline", list)
    if not stages_doc:
        raise fields.error("pipeline", "needs at least one stage")
    stages = []
    for number, stage_doc in enumerate(stages_doc, start=1):
        where = f"pipeline[{number - 1}]"
        # A stage is a list of variants; a lone mapping is a stage of one variant.
        variant_docs = [stage_doc] if isinstance(stage_doc, LineMapping) else stage_doc
        # YAML lists keep no lines: errors about one point at `pipeline:`.
        if not isinstance(variant_docs, list) or not variant_docs:
            raise ConfigError(f"{where}: stage {number} must be a list of variants ({{model: name:version, "
                              "weight: N})", fields.where("pipeline"))
        variants = []
        for index, variant_doc in enumerate(variant_docs):
            if not isinstance(variant_doc, LineMapping):
                raise ConfigError(f"{where}[{index}]: a variant is a mapping with a `model`", fields.where("pipeline"))
            variants.append(_variant(Fields(variant_doc, fields.path, f"{where}[{index}].")))
        stage = Stage(tuple(variants), Fields(variant_docs[0], fields.path).where())
        _check_stage(stage, number)
        stages.append(stage)
    return tuple(stages)


def _variant(fields: Fields) -> VariantManifest:
    if "modelservices" in fields.mapping:  # the older `hs` CLI's stage: say how to write it now
        raise fields.error("modelservices", "the older stage spelling; a stage is now the list of its variants "
                           "itself: `- - {model: name:version, weight: N}`")
    fields.reject_unknown(_VARIANT_FIELDS)
    model = parse_model_ref(fields.required("model", str), fields.where("model"))
    shadow = fields.optional("shadow", bool, False)
    source = fields.where("model")
    if shadow:
        if "weight" in fields.mapping:
            raise fields.error("weight", "a shadow takes no weight: it gets a copy of every request of its "
                               "stage (or of its `sample` share)")
        sample = fields.optional("sample", float, 1.0)
        if not 0.0 <= sample <= 1.0:
            raise fields.error("sample", f"must be between 0.0 and 1.0, got {sample}")
        compare = _compare(fields) if "compare" in fields.mapping else CompareSpec()
        return VariantManifest(model, 0, True, sample, compare, source)
    for shadow_only in ("sample", "compare"):
        if shadow_only in fields.mapping:
            raise fields.error(shadow_only, "only a shadow variant (shadow: true) takes one")
    weight = fields.optional("weight", int, DEFAULT_WEIGHT)
    if weight < 0:
        raise fields.error("weight", f"must be a non-negative integer, got {weight}")
    return VariantManifest(model, weight, source=source)


def _compare(fields: Fields) -> CompareSpec:
    compare = fields.nested("compare")
    compare.reject_unknown({"rtol", "atol"})
    values: dict[str, Any] = {}
    for key in ("rtol", "atol"):
        value = compare.optional(key, float, None)
        if value is not None:
            if not value >= 0 or value == float("inf"):
                raise compare.error(key, f"must be a finite number >= 0, got {value}")
            values[key] = value
    return CompareSpec(**values)


def _check_stage(stage: Stage, number: int) -> None:
    live = stage.live
    if not live:
        raise ConfigError(f"stage {number} has no live variant: a stage needs one that is not a shadow",
                          stage.source)
    if sum(v.weight for v in live) <= 0:
        raise ConfigError(f"stage {number}: the weights of its live variants sum to 0; at least one must "
                          "be greater than 0", stage.source)
    seen: dict[ModelRef, str] = {}
    for variant in stage.variants:
        if variant.model in seen:
            raise ConfigError(f"stage {number}: model {variant.model} is also a variant at {seen[variant.model]}",
                              variant.source)
        seen[variant.model] = variant.source


def parse_model_ref(text: str, where: str) -> ModelRef:
    """`name`, `name:3` or `name@label`."""
    match = _MODEL_REF.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"model: {text!r} is not a model reference (name, name:VERSION or name@LABEL)",
                          where)
    name, version, label = match.groups()
    return ModelRef(name, Selector(int(version) if version else None, label))
