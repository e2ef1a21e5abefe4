"""A loaded model: its manifest, its function and how the function is called."""

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

from modelfolder import ConfigError, ModelDefinition, load_model_folder
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from runtime.errors import InputError, UserCodeError
from runtime.styles import Attached, Style, arguments, detect_style, to_response

log = logging.getLogger("runtime")

ENTRY_POINT = Path("src") / "func_main.py"
COMPAT_PATH = Path(__file__).parent / "compat"


@dataclass
class LoadedModel:
    """A model folder ready to be called."""

    manifest: ModelDefinition
    function: Callable[..., Any]
    style: Style

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    def predict(self, request: PredictRequest, attached: Attached | None = None) -> PredictResponse:
        """Call a synchronous function with the request's inputs; check what it returns."""
        kwargs = self._arguments(request, attached)
        try:
            result = self.function(**kwargs)
        except Exception as error:
            raise self._user_error(error) from error
        return self._response(result, attached)

    async def predict_async(self, request: PredictRequest, attached: Attached | None = None) -> PredictResponse:
        """Await an async function with the request's inputs; check what it returns."""
        kwargs = self._arguments(request, attached)
        try:
            result = await self.function(**kwargs)
        except Exception as error:
            raise self._user_error(error) from error
        return self._response(result, attached)

    def _arguments(self, request: PredictRequest, attached: Attached | None) -> dict[str, Any]:
        signature = self.manifest.signature
        missing = [name for name in signature.inputs if name not in request.inputs]
        if missing:
            raise InputError(f"missing input {missing[0]!r}; expected {sorted(signature.inputs)}")
        try:
            return arguments(self.style, request.inputs, signature, attached.inputs if attached else {})
        except ValueError as error:
            raise InputError(f"malformed input tensor: {error}") from None

    def _response(self, result: Any, attached: Attached | None) -> PredictResponse:
        detach = attached.outputs if attached is not None else None
        return to_response(self.style, result, self.manifest.signature, self.manifest.name, detach)

    def _user_error(self, error: Exception) -> UserCodeError:
        log.error("model %s:%s raised", self.manifest.name, self.manifest.version, exc_info=error)
        return UserCodeError(f"{type(error).__name__}: {error}")


def load_manifest(folder: Path) -> tuple[ModelDefinition, Style]:
    """The folder's manifest and its function style, without importing user code."""
    manifest = load_model_folder(folder)
    source = folder / ENTRY_POINT
    if not source.is_file():
        raise ConfigError(f"model {manifest.name}: {ENTRY_POINT} is missing", str(source))
    if manifest.style is not None:
        return manifest, Style(manifest.style)
    try:
        return manifest, detect_style(source)
    except SyntaxError as error:
        raise ConfigError(f"model {manifest.name}: syntax error: {error.msg}",
                          f"{source}:{error.lineno}") from None


def load_model(folder: Path, *, chdir: bool = True) -> LoadedModel:
    """Read `serving.yaml`, import `src/func_main.py` and find the contract's function.

    With `chdir` (what the runtime process does) the folder becomes the working directory
    so the function's relative paths work.
    """
    manifest, style = load_manifest(folder)
    source = folder / ENTRY_POINT
    provide_compat_modules()
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
    _check_parameters(manifest, function, source)
    return LoadedModel(manifest, function, style)


def _check_parameters(manifest: ModelDefinition, function: Callable[..., Any], source: Path) -> None:
    parameters = inspect.signature(function).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    for name in manifest.signature.inputs:
        if name not in parameters:
            raise ConfigError(f"model {manifest.name}: function {manifest.signature.name} has no "
                              f"parameter {name!r} for contract input {name!r}", str(source))


def provide_compat_modules() -> None:
    """Make `import hydro_serving_grpc` and `tensorflow.make_ndarray` work: the real packages
    when installed (they come first on the path), else the runtime's stand-ins."""
    if str(COMPAT_PATH) not in sys.path:
        sys.path.append(str(COMPAT_PATH))


def _user_line(error: BaseException, source: Path) -> int:
    line = 1
    traceback = error.__traceback__
    while traceback is not None:
        if Path(traceback.tb_frame.f_code.co_filename) == source:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line
