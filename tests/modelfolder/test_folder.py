"""The model-folder format as the runtime reads it, and the gateway reading the same folders."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

import gateway.errors
from gateway.manifests import ModelManifest
from gateway.manifests import load_model_manifest as load_manifest
from modelfolder import (
    GATEWAY_FIELDS,
    MODEL_FIELDS,
    RUNTIME_THREADS,
    ConfigError,
    ModelDefinition,
    load_model_folder,
    model_folders,
)
from tests.conftest import INCREMENT_MODEL

GATEWAY_ONLY = "version_labels:\n  stable: 1\nbatching:\n  max_batch_size: 8\n"


def _folder(tmp_path: Path, where: str, extra: str = "") -> Path:
    folder = tmp_path / where
    shutil.copytree(INCREMENT_MODEL, folder)
    serving = folder / "serving.yaml"
    serving.write_text(serving.read_text() + extra)
    return folder


def _definition_of(manifest: ModelManifest) -> ModelDefinition:
    return ModelDefinition(**{f.name: getattr(manifest, f.name) for f in dataclasses.fields(ModelDefinition)})


def test_the_example_folder_as_the_runtime_reads_it() -> None:
    model = load_model_folder(INCREMENT_MODEL)
    assert type(model) is ModelDefinition
    assert (model.name, model.version, model.signature.name) == ("increment_model", 1, "increment")
    assert model.folder == INCREMENT_MODEL.resolve()
    assert model.payload == ("src/", "requirements.txt")
    assert model.install_command == "pip install -r requirements.txt"
    assert (model.style, model.workers, model.runtime_threads) == (None, 1, RUNTIME_THREADS)
    assert model.source == f"{INCREMENT_MODEL / 'serving.yaml'}:1"


def test_the_gateway_extends_the_same_definition(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "m", GATEWAY_ONLY + "workers: 6\n")
    runtime_view, gateway_view = load_model_folder(folder), load_manifest(folder)
    assert _definition_of(gateway_view) == runtime_view
    assert runtime_view.runtime_threads == gateway_view.runtime_threads == 12
    assert dict(gateway_view.version_labels) == {"stable": 1}
    assert gateway_view.batching is not None
    assert gateway_view.batching.max_batch_size == 8


def test_numbered_folders_are_versions_for_both_readers(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "models/m/3")
    assert load_model_folder(folder).version == load_manifest(folder).version == 3
    assert model_folders(tmp_path / "models") == [folder]


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ("version: 2\n", 21, "version: 2 contradicts the folder name 3"),
        ("colour: red\n", 21, "colour: unknown field (accepted: backend, batching, contract, install-command, "
                              "kind, name, payload, request_log, runtime, style, version, version_labels, warmup, "
                              "workers)"),
        ("style: java\n", 21, "style: 'java' is not a function style (accepted: hydrosphere, hydrosphere3, numpy)"),
        ("workers: 0\n", 21, "workers: must be at least 1"),
    ],
)
def test_errors_are_the_same_from_both_readers(tmp_path: Path, extra: str, line: int, message: str) -> None:
    folder = _folder(tmp_path, "models/m/3", extra)
    for load in (load_model_folder, load_manifest):
        with pytest.raises(ConfigError) as caught:
            load(folder)
        assert (caught.value.location, caught.value.message) == (f"{folder / 'serving.yaml'}:{line}", message)


def test_a_folder_needs_its_contract(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "serving.yaml").write_text("kind: Model\nname: m\n")
    with pytest.raises(ConfigError, match="contract: required field is missing") as caught:
        load_model_folder(folder)
    assert caught.value.location == f"{folder / 'serving.yaml'}:1"


def test_one_config_error_class_for_runtime_and_gateway() -> None:
    assert gateway.errors.ConfigError is ConfigError
    assert {"backend", "version_labels", "batching", "request_log"} == GATEWAY_FIELDS
    assert not MODEL_FIELDS & GATEWAY_FIELDS
