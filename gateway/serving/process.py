"""The lifecycle of a serving process (`gateway serve` and each of its workers): its event loop,
the SIGINT/SIGTERM that stop it, and SIGHUP held while it starts or stops."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from types import FrameType
from typing import Any

log = logging.getLogger("gateway")


def run_on_uvloop(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` to its end on a uvloop event loop (asyncio's when uvloop is missing)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def stop_on_signals(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    """An event set at SIGINT or SIGTERM: the process drains and stops (the gateway owns these
    signals, not uvicorn, so that a shutdown always stops the runtimes)."""
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    return stopping


def hold_sighup(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """While the gateway starts or stops (no reload to be had) SIGHUP is logged and ignored,
    rather than ending the gateway (its default action)."""
    if loop is not None:
        loop.remove_signal_handler(signal.SIGHUP)
    signal.signal(signal.SIGHUP, _sighup_ignored)


def _sighup_ignored(_signum: int, _frame: FrameType | None) -> None:
    log.warning("SIGHUP ignored: the gateway is starting or stopping (a reload needs it serving)")
