"""Warmup of remote models (kind Model with a `backend:` and a `warmup:` file): the gateway
process that stages the config replays the file's predict records through the model's Backend
before the model takes traffic (`gateway serve` at start, `ConfigStager.stage` at reload). Local
models are warmed by their runtime itself (runtime.warmup). A remote server is shared: every
gateway instance that stages the config replays the file to it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable

from gateway.backends import Backend, BackendCall, NDArray
from gateway.backends.base import default_signature
from gateway.backends.pool import ChannelPool
from gateway.errors import BackendUnavailable, DeadlineExceeded, GatewayError
from gateway.manifests import ModelManifest
from gateway.registry import BACKENDS
from modelfolder import WarmupError, WarmupRecord, read_warmup
from tensorcodecs import CodecError
from tensorcodecs.tensor_proto import decode_tensor, shape_elements

log = logging.getLogger("gateway.warmup")

ModelKey = tuple[str, int]
RETRY_FIRST_S, RETRY_MAX_S = 0.1, 2.0  # back-off while a server cannot be reached at start


def check_warmups(models: Iterable[ModelManifest],
                  label: Callable[[ModelManifest], str]) -> tuple[list[str], list[str]]:
    """What `gateway check` says of every model's warmup file (read and checked, not replayed),
    each model named by `label`: a line per file, and the errors."""
    lines: list[str] = []
    errors: list[str] = []
    for model in models:
        if model.warmup is None:
            continue
        try:
            records = read_warmup(model.warmup)
        except WarmupError as error:
            errors.append(f"model {label(model)}: {error}")
            continue
        refused = next(((r, why) for r in records if (why := refusal(model, r)) is not None), None)
        if refused is not None:
            errors.append(f"model {label(model)}: {WarmupError(model.warmup, refused[0].number, refused[1])}")
        kinds = Counter(record.kind for record in records)
        lines.append(f"model {label(model)} warmup {model.warmup}: {len(records)} records ("
                     + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) + ")")
    return lines, errors


def refusal(model: ModelManifest, record: WarmupRecord) -> str | None:
    """Why `record` can never warm `model` (None: it can): a remote model is sent Predicts only,
    and the embedded runtime serves no MultiInference."""
    if model.folder is None and record.predict_request is None:
        return f"a remote model is warmed with predict_log (and predict_streamed_log) records only, not {record.kind}"
    if model.folder is not None and record.kind == "multi_inference_log":
        return "the embedded runtime does not serve multi_inference_log (MultiInference)"
    return None


def remote_warmups(models: Iterable[ModelManifest]) -> list[ModelManifest]:
    """The remote models among `models` whose manifest names a warmup file."""
    return [m for m in models if m.folder is None and m.backend is not None and m.warmup is not None]


async def warm_remote(model: ModelManifest, timeout_s: float, *, max_elements: int,
                      wait_for_server: bool = False) -> int:
    """Replay `model`'s warmup file through its backend within `timeout_s` seconds (each call
    gets what is left); the number of records, or WarmupError naming the record that failed.
    With `wait_for_server` (at start), a server that cannot be reached is tried again with
    back-off until the time is up; a record the server answers with an error fails at once."""
    assert model.warmup is not None
    assert model.backend is not None
    path = model.warmup
    started = time.monotonic()
    deadline = started + timeout_s
    records = await asyncio.to_thread(read_warmup, path)
    pool = ChannelPool()  # its own channels, closed when done: nothing lingers
    try:
        backend = BACKENDS[model.backend.protocol](model, pool, guarded=False)
        for record in records:
            why = refusal(model, record)
            if why is not None:
                raise WarmupError(path, record.number, why)
            try:
                call = _call(model, record, deadline, timeout_s, max_elements)
                await _send(backend, call, deadline, wait_for_server)
            except WarmupError:
                raise
            except GatewayError as error:
                raise WarmupError(path, record.number, f"{error.code}: {error.message}") from None
            except Exception as error:  # noqa: BLE001 - any failure of a record fails the warmup
                raise WarmupError(path, record.number, f"{type(error).__name__}: {error}") from None
    finally:
        await pool.close()
    log.info("warmed model %s:%s with %d records in %.3f s", model.name, model.version, len(records),
             time.monotonic() - started)
    return len(records)


def _call(model: ModelManifest, record: WarmupRecord, deadline: float, timeout_s: float,
          max_elements: int) -> BackendCall:
    """The backend call of a Predict record (its tensors refused before decoding when larger
    than `max_elements`, as a request's would be)."""
    assert model.warmup is not None
    request = record.predict_request
    assert request is not None
    inputs: dict[str, NDArray] = {}
    for name, proto in request.inputs.items():
        elements = shape_elements(proto)
        if elements > max_elements:
            raise WarmupError(model.warmup, record.number, f"input {name} has {elements} elements, more than "
                                                           f"max_elements ({max_elements})")
        try:
            inputs[name] = decode_tensor(proto)
        except CodecError as error:
            raise WarmupError(model.warmup, record.number, f"input: {error}") from None
    left = deadline - time.monotonic()
    if left <= 0:
        raise WarmupError(model.warmup, record.number, f"the warmup did not finish within {timeout_s:g}s")
    return BackendCall(inputs, left, request_id=f"warmup-{record.number}",
                       signature_name=request.model_spec.signature_name or default_signature(model))


async def _send(backend: Backend, call: BackendCall, deadline: float, wait_for_server: bool) -> None:
    """Send `call`; with `wait_for_server`, again after a back-off while the server cannot be
    reached and time is left (the gateway may start before its TF Serving)."""
    pause = RETRY_FIRST_S
    while True:
        try:
            await backend.predict(call)
            return
        except (BackendUnavailable, DeadlineExceeded):
            left = deadline - time.monotonic()
            if not wait_for_server or left <= pause:
                raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX_S)
            call = call._replace(timeout=deadline - time.monotonic())


async def warm_remotes(models: Iterable[ModelManifest], timeout_s: float, *,
                       max_elements: int, wait_for_server: bool = False
                       ) -> dict[ModelKey, str]:
    """Warm each remote model of `models` that names a warmup file, all at once; the failures,
    by model (logged)."""
    wanted = remote_warmups(models)
    results = await asyncio.gather(*(warm_remote(m, timeout_s, max_elements=max_elements,
                                                 wait_for_server=wait_for_server) for m in wanted),
                                   return_exceptions=True)
    failed: dict[ModelKey, str] = {}
    for model, result in zip(wanted, results, strict=True):
        if isinstance(result, WarmupError):
            failed[model.key] = str(result)
            log.error("model %s:%s is not served: %s", model.name, model.version, result)
        elif isinstance(result, BaseException):
            raise result
    return failed
