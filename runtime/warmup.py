"""A model version's warmup, as TF Serving warms a SavedModel while loading it: every record of
its warmup file (modelfolder.warmup) is answered by the loaded model, in this process and through
the handlers its calls reach (so every style and async functions warm as they serve; with
`workers: N` every worker process answers every record, each having its own copy), before the
runtime listens or says SERVING. A failure (a record the model answers with an error, a bad
file, the time bound) ends the runtime with `EXIT_CODE`, the message on stderr and, for the
supervisor, a `warmup_failed` event on stdout."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import NoReturn

from modelfolder import WarmupError, read_warmup
from runtime.errors import RuntimeCallError
from runtime.exits import die, exit_runtime
from runtime.server import ModelServer

log = logging.getLogger("runtime")

# The runtime's exit code when its model's warmup failed: EX_CONFIG (sysexits.h), unlike the
# small codes a model's own sys.exit uses.
EXIT_CODE = 78
EVENT = "warmup_failed"  # the stdout event that carries the message


def warm(server: ModelServer, timeout_s: float) -> int:
    """Replay the model's warmup file (if it has one) within `timeout_s` seconds; the number of
    records replayed, or WarmupError naming the record that failed."""
    manifest = server.manifest
    path = manifest.warmup
    if path is None:
        return 0
    started = time.perf_counter()
    records = read_warmup(path)
    current = [0]  # the record being replayed, for the time bound's message
    failure: list[BaseException] = []

    def replay() -> None:
        try:
            for record in records:
                current[0] = record.number
                try:
                    server.replay(record.log)
                except RuntimeCallError as error:
                    raise WarmupError(path, record.number, f"{error.code.name}: {error.message}") from None
                except Exception as error:  # noqa: BLE001 - any failure of a record fails the warmup
                    raise WarmupError(path, record.number, f"{type(error).__name__}: {error}") from None
        except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
            failure.append(error)

    # In a thread: a record that never returns cannot hold the runtime past the time bound.
    thread = threading.Thread(target=replay, name="warmup", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise WarmupError(path, current[0], f"the warmup did not finish within {timeout_s:g}s")
    if failure:
        error = failure[0]
        if isinstance(error, SystemExit):
            exit_runtime(error, f"warmup record {current[0]} of {path}")
        raise error
    log.info("warmed model %s:%s with %d records in %.3f s", manifest.name, manifest.version, len(records),
             time.perf_counter() - started)
    return len(records)


def end_runtime(error: WarmupError) -> NoReturn:
    """End the runtime because its warmup failed: the message on stderr and as the supervisor's
    event on stdout, the model's worker processes killed, exit code EXIT_CODE (at once: a record
    still running holds a thread that would not end)."""
    print(f"runtime: {error}", file=sys.stderr, flush=True)
    print(json.dumps({"event": EVENT, "error": str(error)}), flush=True)
    die(EXIT_CODE)
