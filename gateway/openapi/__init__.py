"""The OpenAPI document of the gateway, typed from the contracts: schemas and examples per
dtype and shape (schemas.py), what the document lists (catalog.py), the document itself
(document.py, with the contract-free parts in responses.py), and the same document in OpenAPI
3.0 (dialect30.py).

    live_document(dataplane, settings, api_key)   what a running gateway serves at /openapi.json
    live_catalog(dataplane, settings, api_key)    what it lists (read on the loop, built off it)
    document_for_config(config, settings)         the same offline, from the manifests alone
    to_yaml(document), to_openapi_30(document)    its other renderings
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.openapi import yaml_text
from gateway.openapi.catalog import Allowed, Catalog, everyone, from_config, from_registry
from gateway.openapi.dialect30 import to_openapi_30
from gateway.openapi.document import build_document
from gateway.settings import ApiKey, Settings

if TYPE_CHECKING:
    from gateway.dataplane import DataPlane
    from gateway.manifests import Config

__all__ = ["document_for_config", "live_document", "to_openapi_30", "to_yaml"]


def nobody(name: str) -> bool:
    return False


def allowed_for(settings: Settings, api_key: ApiKey | None) -> Allowed:
    """What a caller presenting `api_key` may call: everything without configured keys, nothing
    without a known key, else what the key allows."""
    if not settings.auth.api_keys:
        return everyone
    return api_key.allows if api_key is not None else nobody


def live_catalog(dataplane: DataPlane, settings: Settings, api_key: ApiKey | None) -> Catalog:
    """What the live document of `api_key` lists, read from the registry (on its event loop:
    discoveries change it there)."""
    return from_registry(dataplane.registry, settings.auth, allowed_for(settings, api_key))


def live_document(dataplane: DataPlane, settings: Settings, api_key: ApiKey | None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the running registry (discovered contracts included), listing
    the applications and models `api_key` may call."""
    return build_document(live_catalog(dataplane, settings, api_key))


def document_for_config(config: Config, settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `config` from its manifests alone (no backend asked, no runtime
    started): models whose contracts are not declared get the generic schemas and say so. Every
    application and model is listed (the key filter applies to what a gateway serves)."""
    return build_document(from_config(config, settings.auth))


def to_yaml(document: dict[str, Any]) -> str:
    """`document` as block-style YAML, its keys in the document's order, no aliases
    (`yaml_text.dump`: what `yaml.safe_load` reads back as `document`)."""
    return yaml_text.dump(document)
