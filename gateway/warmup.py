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

from gateway.backends import BackendCall
from gateway.backends.base import default_signature
from gateway.backends.pool import ChannelPool
from gateway.errors import GatewayError
from gateway.manifests import ModelManifest
from gateway.registry import BACKENDS
from modelfolder import WarmupError, read_warmup
from tensorcodecs import CodecError
from tensorcodecs.tensor_proto import decode_tensor

log = logging.getLogger("gateway.warmup")

ModelKey = tuple[str, int]


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
        kinds = Counter(record.kind for record in records)
        if model.folder is None and set(kinds) - {"predict_log"}:
            errors.append(f"model {label(model)}: {model.warmup}: a remote model is warmed with predict_log "
                          "records only")
        lines.append(f"model {label(model)} warmup {model.warmup}: {len(records)} records ("
                     + ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) + ")")
    return lines, errors


def remote_warmups(models: Iterable[ModelManifest]) -> list[ModelManifest]:
    """The remote models among `models` whose manifest names a warmup file."""
    return [m for m in models if m.folder is None and m.backend is not None and m.warmup is not None]


async def warm_remote(model: ModelManifest, timeout_s: float) -> int:
    """Replay `model`'s warmup file through its backend within `timeout_s` seconds (each call
    gets what is left); the number of records, or WarmupError naming the record that failed."""
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
            if record.kind != "predict_log":
                raise WarmupError(path, record.number, f"a remote model is warmed with predict_log records "
                                                       f"only, not {record.kind}")
            request = record.log.predict_log.request
            try:
                inputs = {name: decode_tensor(proto) for name, proto in request.inputs.items()}
            except CodecError as error:
                raise WarmupError(path, record.number, f"input: {error}") from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise WarmupError(path, record.number, f"the warmup did not finish within {timeout_s:g}s")
            call = BackendCall(inputs, left, request_id=f"warmup-{record.number}",
                               signature_name=request.model_spec.signature_name or default_signature(model))
            try:
                await backend.predict(call)
            except GatewayError as error:
                raise WarmupError(path, record.number, f"{error.code}: {error.message}") from None
    finally:
        await pool.close()
    log.info("warmed model %s:%s with %d records in %.3f s", model.name, model.version, len(records),
             time.monotonic() - started)
    return len(records)


async def warm_remotes(models: Iterable[ModelManifest], timeout_s: float) -> dict[ModelKey, str]:
    """Warm each remote model of `models` that names a warmup file, all at once; the failures,
    by model (logged)."""
    wanted = remote_warmups(models)
    results = await asyncio.gather(*(warm_remote(m, timeout_s) for m in wanted), return_exceptions=True)
    failed: dict[ModelKey, str] = {}
    for model, result in zip(wanted, results, strict=True):
        if isinstance(result, WarmupError):
            failed[model.key] = str(result)
            log.error("model %s:%s is not served: %s", model.name, model.version, result)
        elif isinstance(result, BaseException):
            raise result
    return failed
