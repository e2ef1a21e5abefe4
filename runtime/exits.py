"""A model that calls sys.exit in a call ends its runtime with that code, as it would in a program
of its own: the gateway's supervisor then logs the exit and restarts the runtime like a crash
(rather than the call thread dying silently and the call hanging or its connection closing).
SystemExit is caught only where the runtime calls the model (a thread the model starts itself
ends on sys.exit, as in plain Python)."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
from typing import NoReturn

log = logging.getLogger("runtime")


def exit_runtime(error: SystemExit, where: str) -> NoReturn:
    """Log the model's sys.exit and end the process with its code at once (from any thread),
    its worker processes (`workers: N`) with it."""
    code = error.code
    status = code if isinstance(code, int) else 0 if code is None else 1
    log.error("the model called sys.exit(%r) in %s: the runtime exits with code %d", code, where, status)
    die(status)


def die(status: int) -> NoReturn:
    """End the process with `status` at once (from any thread), its worker processes with it."""
    for child in multiprocessing.active_children():  # os._exit skips the pool's shutdown
        with contextlib.suppress(OSError):
            child.kill()
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

