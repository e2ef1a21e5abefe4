"""The control link of `gateway serve --workers N`: one reload, whichever process it was asked of,
reaches every worker.

The parent owns the model runtimes, so it alone stages a reload (validates the manifests, starts
the runtimes of new and changed models); then it has every worker swap to the same config bound to
the new runtimes, waits until they have, and answers the caller. A worker asked for a reload
(`POST /admin/reload`, SIGHUP) forwards it to the parent and answers with the outcome. Messages
travel pickled over one `multiprocessing.Pipe` per worker, read by the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from starlette.applications import Starlette

from gateway.errors import ConfigError
from gateway.manifests import Config
from gateway.reload import SHUTTING_DOWN, ConfigStager, Reloader, ReloadResult
from gateway.supervisor import ModelKey, RuntimeProcess

log = logging.getLogger("gateway.workers")

APPLY_TIMEOUT_S = 30.0  # a worker swaps in well under this; one that does not is not waited for


@dataclass(frozen=True)
class AskReload:
    """worker -> parent: reload, then send `Answer(ask, ...)`."""

    ask: int


@dataclass(frozen=True)
class Apply:
    """parent -> worker: swap to `config`, then send `Applied(round)`."""

    round: int
    config: Config
    failed: dict[ModelKey, str]


@dataclass(frozen=True)
class Applied:
    round: int


@dataclass(frozen=True)
class Answer:
    ask: int
    result: ReloadResult


class _Link:
    """One end of a pipe, read by the running event loop."""

    def __init__(self, connection: Connection, on_message: Callable[[object], None],
                 on_closed: Callable[[], None] = lambda: None) -> None:
        self.connection = connection
        self.on_message = on_message
        self.on_closed = on_closed
        self.closed = False
        asyncio.get_running_loop().add_reader(connection.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            message = self.connection.recv()
        except (EOFError, OSError):
            self.close()
            return
        self.on_message(message)

    def send(self, message: object) -> None:
        if self.closed:
            return
        try:
            self.connection.send(message)
        except OSError:  # the other side is gone; its reader sees the end too
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.connection.fileno())
        self.connection.close()
        self.on_closed()


class WorkerReloads:
    """In the parent: stages each reload once and has every worker apply it."""

    def __init__(self, stager: ConfigStager, failed: Mapping[ModelKey, str], drain_timeout_s: float,
                 apply_timeout_s: float = APPLY_TIMEOUT_S) -> None:
        self.stager = stager
        self.failed = dict(failed)  # the current config's models without a runtime (for new workers)
        self.drain_timeout_s = drain_timeout_s
        self.apply_timeout_s = apply_timeout_s
        self.links: dict[int, _Link] = {}
        self._lock = asyncio.Lock()
        self._rounds = itertools.count(1)
        self._acks: dict[tuple[int, int], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reloading: set[asyncio.Task[ReloadResult]] = set()
        self._abandoned = False

    @property
    def config(self) -> Config:
        return self.stager.config

    def attach(self, index: int) -> Connection:
        """A new pipe for worker `index` (replacing its previous one); returns the worker's end."""
        previous = self.links.pop(index, None)
        if previous is not None:
            previous.close()
        mine, theirs = multiprocessing.Pipe()
        self.links[index] = _Link(mine, lambda message: self._received(index, message),
                                  lambda: self._lost(index))
        return theirs

    def _received(self, index: int, message: object) -> None:
        if isinstance(message, AskReload):
            self._spawn(self._answer(index, message.ask))
        elif isinstance(message, Applied):
            ack = self._acks.pop((index, message.round), None)
            if ack is not None and not ack.done():
                ack.set_result(None)

    def _lost(self, index: int) -> None:
        for (worker, round_), ack in list(self._acks.items()):
            if worker == index and not ack.done():
                ack.set_result(None)
                del self._acks[(worker, round_)]

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, index: int, ask: int) -> None:
        result = await self.reload()
        link = self.links.get(index)
        if link is not None:
            link.send(Answer(ask, result))

    async def reload(self) -> ReloadResult:
        """Stage the config directory and have every worker swap to it; one at a time."""
        if self._abandoned:
            return ReloadResult(False, SHUTTING_DOWN, shutting_down=True)
        task = asyncio.create_task(self._reload())
        self._reloading.add(task)
        task.add_done_callback(self._reloading.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if self._abandoned:
                return ReloadResult(False, SHUTTING_DOWN, shutting_down=True)
            raise

    async def _reload(self) -> ReloadResult:
        async with self._lock:
            try:
                staged = await self.stager.stage()
            except ConfigError as error:
                log.error("reload refused, the current config keeps serving: %s", error)
                return ReloadResult(False, str(error))
            retiring = self.stager.commit(staged)  # from now on new workers start on it
            self.failed = dict(staged.failed)
            round_ = next(self._rounds)
            loop = asyncio.get_running_loop()
            acks = []
            for index, link in list(self.links.items()):
                ack: asyncio.Future[None] = loop.create_future()
                self._acks[(index, round_)] = ack
                acks.append(ack)
                link.send(Apply(round_, staged.config, staged.failed))
            _, late = await asyncio.wait(acks, timeout=self.apply_timeout_s) if acks else (set(), set())
            if late:
                log.warning("%d workers did not confirm the reload within %gs", len(late), self.apply_timeout_s)
            self._spawn(self._retire_later(retiring))
            config = staged.config
            log.info("reloaded %d workers: %d applications, %d models", len(acks), len(config.applications),
                     len(config.models))
            return ReloadResult(True, None, sorted(config.applications),
                                sorted(f"{name}:{version}" for name, version in config.models),
                                {f"{name}:{version}": reason for (name, version), reason in staged.failed.items()})

    async def _retire_later(self, runtimes: list[RuntimeProcess]) -> None:
        await asyncio.sleep(self.drain_timeout_s)
        await self.stager.retire(runtimes)

    def abandon(self) -> None:
        """Give up reloads under way (the gateway is stopping)."""
        self._abandoned = True
        for task in self._reloading:
            task.cancel()

    async def close(self) -> None:
        self.abandon()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._reloading, *self._tasks, return_exceptions=True)
        for link in list(self.links.values()):
            link.close()


class ParentLink:
    """In a worker: reloads asked for here are carried out by the parent (for every worker);
    the swaps the parent sends are applied to this worker's app."""

    def __init__(self, connection: Connection, app: Starlette) -> None:
        self.app = app
        self._asks = itertools.count(1)
        self._answers: dict[int, asyncio.Future[ReloadResult]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._abandoned = False
        self.link = _Link(connection, self._received, self._lost)

    async def reload(self) -> ReloadResult:
        if self._abandoned or self.link.closed:
            return ReloadResult(False, SHUTTING_DOWN, shutting_down=True)
        ask = next(self._asks)
        answer: asyncio.Future[ReloadResult] = asyncio.get_running_loop().create_future()
        self._answers[ask] = answer
        self.link.send(AskReload(ask))
        return await answer

    def _received(self, message: object) -> None:
        if isinstance(message, Answer):
            answer = self._answers.pop(message.ask, None)
            if answer is not None and not answer.done():
                answer.set_result(message.result)
        elif isinstance(message, Apply):
            task = asyncio.create_task(self._apply(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _apply(self, message: Apply) -> None:
        reloader: Reloader | None = getattr(self.app.state, "reloader", None)
        while reloader is None:  # the app is still starting
            await asyncio.sleep(0.05)
            reloader = getattr(self.app.state, "reloader", None)
        await reloader.apply(message.config, message.failed)
        self.link.send(Applied(message.round))

    def _lost(self) -> None:
        self.abandon()

    def abandon(self) -> None:
        """Answer reloads still waiting for the parent at once (the worker is stopping)."""
        self._abandoned = True
        for answer in self._answers.values():
            if not answer.done():
                answer.set_result(ReloadResult(False, SHUTTING_DOWN, shutting_down=True))
        self._answers.clear()
