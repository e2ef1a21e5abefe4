"""The model-folder format, shared by the model runtime and the gateway (below both).

A model folder is Hydrosphere's: `serving.yaml` (one YAML document of kind Model: `name`,
`runtime`, `install-command`, `payload`, `contract`, and this project's `version`, `style`,
`workers`, `warmup`) beside `src/func_main.py`. Under a config directory's `models/`, `<name>/` is
version 1 (or its `version:`) and `<name>/<N>/` is version N. The runtime reads a folder with
`load_model_folder`; the gateway's manifests (gateway.manifests) read the same documents and
add where the model is served (`backend`, `version_labels`, `batching`). Errors are
`ConfigError`s that name file:line and field.
"""

from modelfolder.contract import parse_contract
from modelfolder.definition import (
    GATEWAY_FIELDS,
    MODEL_FIELDS,
    RUNTIME_THREADS,
    STYLES,
    ModelDefinition,
    ModelHeading,
    model_name,
    model_version,
    parse_definition,
    read_heading,
)
from modelfolder.errors import ConfigError
from modelfolder.layout import MODEL_FILE, load_model_folder, model_folders, read_model_folder
from modelfolder.paths import absolute
from modelfolder.warmup import MAX_RECORDS, WarmupError, WarmupRecord, read_warmup
from modelfolder.yaml_reader import Fields, LineMapping, read_documents, read_text_documents

__all__ = [
    "GATEWAY_FIELDS",
    "MAX_RECORDS",
    "MODEL_FIELDS",
    "MODEL_FILE",
    "RUNTIME_THREADS",
    "STYLES",
    "ConfigError",
    "Fields",
    "LineMapping",
    "ModelDefinition",
    "ModelHeading",
    "WarmupError",
    "WarmupRecord",
    "absolute",
    "load_model_folder",
    "model_folders",
    "model_name",
    "model_version",
    "parse_contract",
    "parse_definition",
    "read_documents",
    "read_heading",
    "read_model_folder",
    "read_text_documents",
    "read_warmup",
]
