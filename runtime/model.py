"""A loaded model: its manifest and the function named by its contract."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.manifests import ModelManifest, load_model_folder
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from tensorcodecs import CodecError
from tensorcodecs.tensor_proto import decode_tensor

log = logging.getLogger("runtime")

ENTRY_POINT = Path("src") / "func_main.py"
COMPAT_PATH = Path(__file__).parent / "compat"


class InputError(ValueError):
    """The request does not carry what the contract needs (the caller's mistake)."""


class OutputError(RuntimeError):
    """The function returned something its output contract does not allow."""


@dataclass
class LoadedModel:
    """A model folder ready to be called."""

    manifest: ModelManifest
    function: Callable[..., Any]

    def predict(self, request: PredictRequest) -> PredictResponse:
        """Call the function with the request's input tensors; check what it returns."""
        signature = self.manifest.signature
        missing = [name for name in signature.inputs if name not in request.inputs]
        if missing:
            raise InputError(f"missing input {missing[0]!r}; expected {sorted(signature.inputs)}")
        result = self.function(**{name: request.inputs[name] for name in signature.inputs})
        response = _as_response(result, self.manifest.name)
        self._check_outputs(response)
        return response

    def _check_outputs(self, response: PredictResponse) -> None:
        name = self.manifest.name
        for output, spec in self.manifest.signature.outputs.items():
            if output not in response.outputs:
                raise OutputError(f"model {name}: output {output!r} is missing from the answer")
            tensor = response.outputs[output]
            if tensor.dtype != spec.dtype.enum:
                raise OutputError(f"model {name}: output {output!r} has dtype {tensor.dtype}, "
                                  f"contract says {spec.dtype.name}")
            try:
                shape = decode_tensor(tensor).shape
            except CodecError as error:
                raise OutputError(f"model {name}: output {output!r} is malformed: {error}") from None
            if not spec.accepts_shape(shape):
                raise OutputError(f"model {name}: output {output!r} has shape {list(shape)}, "
                                  f"contract says {spec.shape_text()}")


def _as_response(result: Any, model: str) -> PredictResponse:
    if isinstance(result, PredictResponse):
        return result
    serialize = getattr(result, "SerializeToString", None)
    if serialize is not None and hasattr(result, "outputs"):
        # A PredictResponse of another protobuf package (the real hydro_serving_grpc):
        # the field numbers are the same, so the bytes are too.
        return PredictResponse.FromString(serialize())
    raise OutputError(f"model {model}: the function returned {type(result).__name__}, "
                      "expected a PredictResponse with .outputs")


def load_model(folder: Path, *, chdir: bool = True) -> LoadedModel:
    """Read `serving.yaml`, import `src/func_main.py` and find the contract's function.

    With `chdir` (what the runtime process does) the folder becomes the working directory
    so the function's relative paths work.
    """
    manifest = load_model_folder(folder)
    source = folder / ENTRY_POINT
    if not source.is_file():
        raise ConfigError(f"model {manifest.name}: {ENTRY_POINT} is missing", str(source))
    _provide_hydro_serving_grpc()
    if chdir:
        os.chdir(folder)
    sys.path.insert(0, str(folder / "src"))
    # A unique module name lets several models load into one process (as tests do).
    module_name = f"func_main__{manifest.name}__{manifest.version}"
    spec = importlib.util.spec_from_file_location(module_name, source)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.modules.setdefault("func_main", module)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ConfigError(f"model {manifest.name}: syntax error: {error.msg}",
                          f"{source}:{error.lineno}") from None
    except Exception as error:  # noqa: BLE001 - any import-time failure of user code
        raise ConfigError(f"model {manifest.name}: importing failed: {type(error).__name__}: {error}",
                          f"{source}:{_user_line(error, source)}") from None
    function = getattr(module, manifest.signature.name, None)
    if not callable(function):
        raise ConfigError(f"model {manifest.name}: no function {manifest.signature.name!r} "
                          f"(contract.name) in {ENTRY_POINT}", str(source))
    parameters = inspect.signature(function).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    unknown = [name for name in manifest.signature.inputs if name not in parameters]
    if unknown and not accepts_any:
        raise ConfigError(f"model {manifest.name}: function {manifest.signature.name} has no "
                          f"parameter {unknown[0]!r} for contract input {unknown[0]!r}", str(source))
    return LoadedModel(manifest, function)


def _provide_hydro_serving_grpc() -> None:
    """Make `import hydro_serving_grpc` work: the real package if installed, else the stand-in."""
    if importlib.util.find_spec("hydro_serving_grpc") is None:
        sys.path.append(str(COMPAT_PATH))


def _user_line(error: BaseException, source: Path) -> int:
    line = 1
    traceback = error.__traceback__
    while traceback is not None:
        if Path(traceback.tb_frame.f_code.co_filename) == source:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line
