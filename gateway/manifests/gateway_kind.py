"""Kind Gateway (`gateway.yaml`): gateway-wide settings in the sections of
`gateway.settings.SECTIONS`, and `auth` — inline, or `auth: {file: PATH}` naming a separate
file of the same keys (a Kubernetes Secret mounted as a file; also `GATEWAY_AUTH_FILE` or
`gateway serve --auth-file`), read once at start by `with_auth_file`."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from gateway.manifests.types import GatewayManifest
from gateway.settings import SECTIONS, ApiKey, AuthSettings, Settings, convert, field_types
from modelfolder import ConfigError, Fields, LineMapping, read_documents


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
        auth = fields.nested("auth")
        if "file" in auth.mapping:
            auth.reject_unknown({"file"})  # inline keys beside a file: which would hold?
            file = Path(auth.required("file", str))
            values["auth_file"] = file if file.is_absolute() else path.parent / file
        else:
            values["auth"] = _parse_auth(auth)
    manifest = GatewayManifest(values, f"{path}:{doc.line}")
    try:
        Settings(**values).check()
    except ConfigError as error:
        raise ConfigError(error.message, manifest.source) from None
    return manifest


def with_auth_file(settings: Settings) -> Settings:
    """`settings` with its `auth` read from `settings.auth_file`, when one is set. The file holds
    the keys of gateway.yaml's `auth` section (`api_keys`, `admin_token_sha256`); keys inline in
    gateway.yaml as well is an error."""
    path = settings.auth_file
    if path is None:
        return settings
    if settings.auth != AuthSettings():
        raise ConfigError(f"auth keys are set both in gateway.yaml and in the auth file {path}: "
                          "keep them in one place")
    try:
        empty = not path.read_bytes().strip()
    except OSError as error:
        raise ConfigError(f"cannot read the auth file: {error.strerror}", str(path)) from None
    if empty:  # read as "no keys" it would open every route: a Secret that lost its data is a mistake
        raise ConfigError("the auth file is empty: it holds api_keys and/or admin_token_sha256", str(path))
    documents = list(read_documents(path))
    if len(documents) != 1:
        raise ConfigError("the auth file holds one YAML mapping (api_keys, admin_token_sha256)",
                          f"{path}:{documents[1].line}")
    return dataclasses.replace(settings, auth=_parse_auth(Fields(documents[0], path)))


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
