"""Kind Gateway (`gateway.yaml`): gateway-wide settings in the sections of
`gateway.settings.SECTIONS`, and `auth`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gateway.manifests.types import GatewayManifest
from gateway.settings import SECTIONS, ApiKey, AuthSettings, Settings, convert, field_types
from modelfolder import ConfigError, Fields, LineMapping


def parse_gateway(doc: LineMapping, path: Path) -> GatewayManifest:
    """A kind Gateway document: sections of settings (see `gateway.settings.SECTIONS`) and `auth`."""
    fields = Fields(doc, path)
    fields.reject_unknown({"kind", "auth", *SECTIONS})
    types = field_types()
    values: dict[str, Any] = {}
    for section, names in SECTIONS.items():
        if section not in doc:
            continue
        group = fields.nested(section)
        group.reject_unknown(set(names))
        for name in names:
            if name in group.mapping and group.mapping[name] is not None:
                try:
                    values[name] = convert(name, group.mapping[name], types[name],
                                           source=f"{section}.{name}")
                except ConfigError as error:
                    raise ConfigError(error.message, group.where(name)) from None
    if "auth" in doc:
        values["auth"] = _parse_auth(fields.nested("auth"))
    manifest = GatewayManifest(values, f"{path}:{doc.line}")
    try:
        Settings(**values).check()
    except ConfigError as error:
        raise ConfigError(error.message, manifest.source) from None
    return manifest


def _parse_auth(fields: Fields) -> AuthSettings:
    fields.reject_unknown({"api_keys", "admin_token_sha256"})
    keys: list[ApiKey] = []
    for index, entry in enumerate(fields.optional("api_keys", list, [])):
        if not isinstance(entry, LineMapping):
            raise fields.error("api_keys", f"entry {index} must be a mapping")
        key = Fields(entry, fields.path, f"{fields.prefix}api_keys[{index}].")
        key.reject_unknown({"name", "sha256", "applications"})
        digest = key.required("sha256", str).lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise key.error("sha256", "must be the 64 hex digits of the key's SHA-256")
        applications = key.optional("applications", list, ["*"])
        keys.append(ApiKey(key.required("name", str), digest, tuple(str(a) for a in applications)))
    tokens = [str(t).lower() for t in fields.optional("admin_token_sha256", list, [])]
    for token in tokens:
        if not re.fullmatch(r"[0-9a-f]{64}", token):
            raise fields.error("admin_token_sha256", "entries must be the 64 hex digits of a SHA-256")
    return AuthSettings(tuple(keys), tuple(tokens))
