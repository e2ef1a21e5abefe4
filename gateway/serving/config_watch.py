"""Reload triggers of a serving process: SIGHUP and `--watch` (a change under the config directory)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from gateway.reload import Reloads
from gateway.store.journal import STATE_DIR

log = logging.getLogger("gateway")


class ReloadTrigger:
    """Reloads asked for by SIGHUP or the config watcher, run one after the other by what
    `reloads` returns (None before the gateway serves)."""

    def __init__(self, reloads: Callable[[], Reloads | None]) -> None:
        self.reloads = reloads
        self.tasks: set[asyncio.Task[None]] = set()

    def trigger(self) -> None:
        """Ask for a reload (it runs in a task of its own; a signal handler cannot wait)."""
        task = asyncio.create_task(self._reload())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def abandon(self) -> None:
        """The gateway is stopping: reloads under way give up."""
        reloads = self.reloads()
        if reloads is not None:
            reloads.abandon()

    async def _reload(self) -> None:
        reloads = self.reloads()
        if reloads is None:
            log.warning("reload asked for before the gateway started serving; ignored")
            return
        result = await reloads.reload()
        if not result.applied:
            log.error("reload refused: %s", result.error)


async def watch_config(config_dir: Path, reloads: ReloadTrigger, interval_s: float = 1.0) -> None:
    """Reload when any file under the config directory changes (polled)."""
    seen = snapshot(config_dir)
    while True:
        await asyncio.sleep(interval_s)
        current = snapshot(config_dir)
        if current != seen:
            seen = current
            log.info("config directory changed; reloading")
            reloads.trigger()


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Modification time and size of every file under `directory` (compiled Python and the
    admin API's changes under way left out: a change reloads once it is made)."""
    files = {}
    for path in directory.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and STATE_DIR not in path.relative_to(directory).parts:
            stat = path.stat()
            files[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return files
