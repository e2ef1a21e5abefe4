"""The version an upload gets: one more than any version of that model anyone has or is making.

N = 1 + the highest of: the versions of the model in the config serving now, the numbered
folders under `models/<name>/` (one made by hand, not reloaded yet), and the versions reserved
by uploads under way. A reservation is a folder `<name>.<N>` made with `os.mkdir` in the config
directory's `.gateway-state/reserved/`: the kernel gives each name to one caller only, so
concurrent uploads get distinct versions whether they run in one process or in several workers.
It is released when its upload ends, either way; `ConfigStore.recover()` clears what a crash left.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from gateway.manifests import Config
from gateway.store.journal import ConfigStore

RESERVED = "reserved"  # the store folder holding the reservations
MAX_ATTEMPTS = 1000  # versions tried past the highest before giving up (another reserver took each)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Version `version` of model `name`, held for one upload until `release`."""

    name: str
    version: int
    path: Path

    @property
    def folder(self) -> str:
        """Where the version goes, relative to the config directory."""
        return f"models/{self.name}/{self.version}"

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(self.path)


def highest_version(config: Config, config_dir: Path, reserved_dir: Path | None, name: str) -> int:
    """The highest version of model `name` known anywhere (0 when none)."""
    versions = [version for model_name, version in config.models if model_name == name]
    model_dir = config_dir / "models" / name
    if model_dir.is_dir():
        versions.extend(int(entry.name) for entry in model_dir.iterdir() if entry.name.isdigit())
    if reserved_dir is not None and reserved_dir.is_dir():
        for entry in reserved_dir.iterdir():
            reserved_name, _, number = entry.name.rpartition(".")
            if reserved_name == name and number.isdigit():
                versions.append(int(number))
    return max(versions, default=0)


def reserve_version(store: ConfigStore, config: Config, name: str) -> Reservation:
    """Reserve the next version of model `name` (see the module's docstring); Conflict (409)
    when the config directory is read-only."""
    reserved_dir = store.folder(RESERVED)
    version = highest_version(config, store.config_dir, reserved_dir, name) + 1
    for candidate in range(version, version + MAX_ATTEMPTS):
        path = reserved_dir / f"{name}.{candidate}"
        try:
            os.mkdir(path)
        except FileExistsError:
            continue  # another upload took it first
        if (store.config_dir / "models" / name / str(candidate)).exists():
            os.rmdir(path)  # made since the scan, by hand or by an upload that finished meanwhile
            continue
        return Reservation(name, candidate, path)
    raise RuntimeError(f"no free version of model {name} among {version}..{version + MAX_ATTEMPTS - 1}")
