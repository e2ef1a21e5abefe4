"""Kind Model: a model folder's serving.yaml, or a remote model's manifest with a `backend`.

What the document says about the model itself is read by modelfolder (the format the runtime
reads too); this adds where it is served: `backend` (protocol, target, version or label, TLS),
`version_labels`, `batching` and `request_log`.

A remote model is pinned to one version by `version` (or `backend.version`, or, for TF
Serving, `backend.version_label`); without any of them it is *floating*: it fronts every
version of the served model, gets registry version 0, and forwards the version or label a
request names (the server's latest version when none). `version_labels` map labels to
versions. A `v2` (Open Inference Protocol) backend has neither labels nor signatures, so it
refuses `version_label` and `signature_name`; its `contents` (`raw`, the default, or `typed`)
says how its input tensors travel.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from gateway.backends.protocols import FORWARDS_LABELS, PROTOCOLS
from gateway.manifests.request_log_kind import parse_request_log
from gateway.manifests.types import FLOATING_VERSION, BackendSpec, BatchingSpec, ModelManifest, TLSSpec
from modelfolder import (
    ConfigError,
    Fields,
    LineMapping,
    absolute,
    parse_definition,
    read_heading,
    read_model_folder,
)
from tensorcodecs import Signature

LABEL = re.compile(r"[A-Za-z0-9_.-]+")
# How a v2 backend's input tensors travel: raw_input_contents, or each input's typed contents.
CONTENTS = ("raw", "typed")
MAX_BATCH_DELAY_MS = 10_000.0  # a longer wait on purpose is a mistake, not a batching policy
# host:port, [v6]:port, dns:[//authority/]host:port, or another gRPC scheme (unix:, ipv4:, ...).
_TARGET = re.compile(r"(?:dns:(?://[^/]*/)?)?(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}"
                     r"|(?:unix|unix-abstract|ipv4|ipv6|vsock):.+")


def parse_model(doc: LineMapping, path: Path, *, folder: Path | None, version: int = 1) -> ModelManifest:
    """A kind Model document: from a model folder's serving.yaml or a remote manifest."""
    heading = read_heading(doc, path)  # unknown fields, name and version: checked once
    fields, name, explicit_version = heading.fields, heading.name, heading.version
    backend = None
    if "backend" in doc:
        backend = _parse_backend(fields.nested("backend"), name, explicit_version)
        if backend.version is not None:
            version = backend.version  # unless the document says `version:` (parse_definition)
        elif backend.floating:
            version = FLOATING_VERSION
    elif folder is None:
        raise ConfigError("backend: required for a model that is not a folder with serving.yaml",
                          fields.where())
    definition = parse_definition(heading, folder=folder, version=version,
                                  signature=None if backend is None else Signature(backend.signature_name))
    if backend is not None and backend.protocol == "v2":
        _check_v2_contract(definition.signature, backend.contents, fields)
    labels = _parse_version_labels(fields) if "version_labels" in doc else {}
    batching = _parse_batching(fields.nested("batching"), definition.signature) if "batching" in doc else None
    request_log = parse_request_log(fields) if "request_log" in doc else None
    # The definition's fields, and where the model is served.
    described = {f.name: getattr(definition, f.name) for f in dataclasses.fields(definition)}
    return ModelManifest(**described, backend=backend, version_labels=labels, batching=batching,
                         request_log=request_log)


def load_model_manifest(folder: Path) -> ModelManifest:
    """The manifest of one Hydrosphere-style model folder (`serving.yaml` + `src/`): the
    gateway's view (the runtime's, a ModelDefinition: modelfolder.load_model_folder).

    A folder named by a number (`models/<name>/<N>/`) is version N, as TF Serving lays
    versions out; any other folder is version 1 unless its serving.yaml says `version:`.
    """
    return read_model_folder(folder, _folder_model)


def _folder_model(document: LineMapping, path: Path, folder: Path, version: int) -> ModelManifest:
    return parse_model(document, path, folder=folder, version=version)


def _parse_batching(fields: Fields, signature: Signature) -> BatchingSpec:
    fields.reject_unknown({"max_batch_size", "max_calls", "max_delay_ms"})
    default = BatchingSpec()
    delay = fields.optional("max_delay_ms", float, default.max_delay_ms)
    spec = BatchingSpec(fields.optional("max_batch_size", int, default.max_batch_size),
                        fields.optional("max_calls", int, default.max_calls), delay)
    if spec.max_batch_size < 1:
        raise fields.error("max_batch_size", "must be at least 1")
    if spec.max_calls < 1:
        raise fields.error("max_calls", "must be at least 1")
    if not 0 <= delay <= MAX_BATCH_DELAY_MS:  # nan fails both
        raise fields.error("max_delay_ms", f"must be between 0 and {MAX_BATCH_DELAY_MS:g} (milliseconds)")
    for kind, specs in (("input", signature.inputs), ("output", signature.outputs)):
        for tensor in specs.values():
            if tensor.shape is not None and (not tensor.shape or tensor.shape[0] != -1):
                raise ConfigError(f"batching: {kind} {tensor.name!r} has shape {tensor.shape_text()}; "
                                  "batching needs every input and output to start with a -1 (batch) "
                                  "dimension", fields.where())
    return spec


def _check_v2_contract(signature: Signature, contents: str, fields: Fields) -> None:
    """A declared contract a v2 server can take: datatypes the protocol has, and with typed
    contents a contents field for each input (FP16 has none)."""
    for kind, specs in (("input", signature.inputs), ("output", signature.outputs)):
        for tensor in specs.values():
            if not tensor.dtype.oip:
                raise ConfigError(f"contract: {kind} {tensor.name!r} is {tensor.dtype}, which the Open Inference "
                                  "Protocol has no datatype for", fields.where("contract"))
            if kind == "input" and contents == "typed" and not tensor.dtype.oip_contents:
                raise ConfigError(f"contract: input {tensor.name!r} is {tensor.dtype} ({tensor.dtype.oip}), which "
                                  "has no typed contents field; with backend.contents: typed it cannot be sent",
                                  fields.where("contract"))


def _parse_backend(fields: Fields, model_name: str, model_version: int | None) -> BackendSpec:
    fields.reject_unknown({"protocol", "target", "model_name", "signature_name", "version",
                           "version_label", "tls", "contents"})
    protocol = fields.required("protocol", str)
    if protocol not in PROTOCOLS:
        raise fields.error("protocol", f"unknown protocol {protocol!r} (accepted: {', '.join(PROTOCOLS)})")
    target = fields.required("target", str)
    if not _TARGET.fullmatch(target):
        raise fields.error("target", f"{target!r} is not a gRPC target (host:port, [v6]:port, "
                                     "dns:///host:port)")
    version = fields.optional("version", int, None)
    if version is not None and version < 0:
        raise fields.error("version", "must be 0 or more")
    label = fields.optional("version_label", str, None)
    if label is not None and protocol not in FORWARDS_LABELS:
        raise fields.error("version_label", f"a {protocol} server has no version labels: pin a version, "
                                            "and name it with version_labels")
    if label is not None and not LABEL.fullmatch(label):
        raise fields.error("version_label", f"{label!r} is not a version label (letters, digits, _ . -)")
    if version is not None and label is not None:
        raise fields.error("version_label", "give either version or version_label, not both")
    if version is None and label is None:
        version = model_version
    if protocol == "v2" and "signature_name" in fields.mapping:
        raise fields.error("signature_name", "a v2 model has no signatures (its metadata is one contract)")
    signature_name = fields.optional("signature_name", str, "serving_default")
    if not signature_name:
        raise fields.error("signature_name", "must not be empty")
    contents = fields.optional("contents", str, "raw")
    if "contents" in fields.mapping and protocol != "v2":
        raise fields.error("contents", f"only a v2 backend takes contents (how its tensors travel), not {protocol}")
    if contents not in CONTENTS:
        raise fields.error("contents", f"{contents!r} is not one of {', '.join(CONTENTS)}")
    return BackendSpec(
        protocol=protocol,
        target=target,
        model_name=fields.optional("model_name", str, model_name),
        signature_name=signature_name,
        version=version,
        version_label=label,
        tls=_parse_tls(fields.nested("tls")) if "tls" in fields.mapping else None,
        contents=contents,
    )


def _parse_tls(fields: Fields) -> TLSSpec:
    fields.reject_unknown({"ca", "cert", "key", "server_name"})
    paths: dict[str, Path | None] = {}
    for key in ("ca", "cert", "key"):
        value = fields.optional(key, str, None)
        path = None if value is None else absolute(fields.path.parent / value)
        if path is not None and not path.is_file():
            raise fields.error(key, f"{path} is not a file")
        paths[key] = path
    if (paths["cert"] is None) != (paths["key"] is None):
        raise fields.error("cert", "cert and key go together (mutual TLS)")
    return TLSSpec(paths["ca"], paths["cert"], paths["key"], fields.optional("server_name", str, None))


def _parse_version_labels(fields: Fields) -> dict[str, int]:
    group = fields.nested("version_labels")
    labels: dict[str, int] = {}
    for label in group.mapping:
        version = group.required(str(label), int)
        if not LABEL.fullmatch(str(label)):
            raise group.error(str(label), f"{label!r} is not a version label (letters, digits, _ . -)")
        if version < 0:
            raise group.error(str(label), "a version is 0 or more")
        labels[str(label)] = version
    return labels
