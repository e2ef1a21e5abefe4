"""Kind Application: the stages a request passes through and the models serving each."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.manifests.types import ApplicationManifest, ModelRef, Selector, Stage, VariantManifest
from modelfolder import ConfigError, Fields, LineMapping

_MODEL_REF = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]*)(?::(\d+)|@([A-Za-z0-9_.-]+))?")


def parse_application(doc: LineMapping, path: Path) -> ApplicationManifest:
    """A kind Application document (`singular` for now; pipelines extend `stages`)."""
    fields = Fields(doc, path)
    fields.reject_unknown({"kind", "name", "singular", "timeout_s", "max_concurrency"})
    name = fields.required("name", str)
    singular = fields.nested("singular")
    singular.reject_unknown({"model"})
    model = parse_model_ref(singular.required("model", str), singular.where("model"))
    timeout = fields.optional("timeout_s", float, None)
    if timeout is not None and timeout <= 0:
        raise fields.error("timeout_s", "must be greater than 0")
    concurrency = fields.optional("max_concurrency", int, None)
    if concurrency is not None and concurrency < 1:
        raise fields.error("max_concurrency", "must be at least 1")
    return ApplicationManifest(name, (Stage((VariantManifest(model),)),), f"{path}:{doc.line}", timeout,
                               concurrency)


def parse_model_ref(text: str, where: str) -> ModelRef:
    """`name`, `name:3` or `name@label`."""
    match = _MODEL_REF.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"model: {text!r} is not a model reference (name, name:VERSION or name@LABEL)",
                          where)
    name, version, label = match.groups()
    return ModelRef(name, Selector(int(version) if version else None, label))
