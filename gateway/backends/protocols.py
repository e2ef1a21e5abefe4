"""The backend protocols a manifest may name (`backend.protocol`), each with the module that
implements it (its `connect(manifest, pool) -> Backend`). Names only, so the manifests can
check a protocol without importing any backend: adding a protocol is adding its module and a
row here."""

PROTOCOLS: dict[str, str] = {
    "tensorflow-serving": "gateway.backends.tfserving",
}
