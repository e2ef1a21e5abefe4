"""Where model folders are: `models/<name>/` (version 1, or its serving.yaml's `version:`) and
`models/<name>/<N>/` (version N), as TF Serving lays versions out."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from modelfolder.definition import ModelDefinition, parse_definition, read_heading
from modelfolder.errors import ConfigError
from modelfolder.paths import absolute
from modelfolder.yaml_reader import LineMapping, read_documents

MODEL_FILE = "serving.yaml"
D = TypeVar("D", bound=ModelDefinition)
# (document, its path, the folder, the version its place gives) -> the model it defines.
Parse = Callable[[LineMapping, Path, Path, int], D]


def read_model_folder(folder: Path, parse: Parse[D]) -> D:
    """The model one folder's serving.yaml defines, read by `parse`; a folder named by a number
    is that version, and a `version:` that contradicts it is an error."""
    path = folder / MODEL_FILE
    documents = list(read_documents(path))
    if len(documents) != 1 or documents[0].get("kind") != "Model":
        raise ConfigError("expected exactly one document of kind Model", f"{path}:1")
    document = documents[0]
    if not folder.name.isdigit():
        return parse(document, path, absolute(folder), 1)
    version = int(folder.name)
    model = parse(document, path, absolute(folder), version)
    if model.version != version:
        raise ConfigError(f"version: {model.version} contradicts the folder name {folder.name}",
                          f"{path}:{document.key_lines.get('version', document.line)}")
    return model


def load_model_folder(folder: Path) -> ModelDefinition:
    """The definition of one Hydrosphere-style model folder (`serving.yaml` + `src/`): what the
    runtime reads (the gateway's manifest of a folder: gateway.manifests.load_model_manifest)."""
    return read_model_folder(folder, _definition)


def _definition(document: LineMapping, path: Path, folder: Path, version: int) -> ModelDefinition:
    return parse_definition(read_heading(document, path), folder=folder, version=version)


def model_folders(models_dir: Path) -> list[Path]:
    """Model folders under `models_dir`: `<name>/` (version 1) and `<name>/<N>/` (version N)."""
    folders: list[Path] = []
    for folder in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if (folder / MODEL_FILE).is_file():
            folders.append(folder)
        versions = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()]
        folders.extend(p for p in sorted(versions, key=lambda p: int(p.name)) if (p / MODEL_FILE).is_file())
    return folders
