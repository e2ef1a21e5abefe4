"""The backend protocols a manifest may name (`backend.protocol`), each with the module that
implements it (its `connect(manifest, pool) -> Backend`). Names only, so the manifests can
check a protocol without importing any backend: adding a protocol is adding its module and a
row here."""

PROTOCOLS: dict[str, str] = {
    "tensorflow-serving": "gateway.backends.tfserving",
    "v2": "gateway.backends.oip",
}

# The protocols whose servers resolve version labels themselves: a label that no manifest's
# `version_labels` defines is forwarded to a floating model of these only (the Open Inference
# Protocol has versions but no labels).
FORWARDS_LABELS: frozenset[str] = frozenset({"tensorflow-serving"})
