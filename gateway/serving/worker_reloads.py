"""The control link of `gateway serve --workers N`: one reload, whichever process it was asked of,
reaches every worker.

The parent owns the model runtimes, so it alone stages a reload (validates the manifests, starts
the runtimes of new and changed models); then it has every worker swap to the same config bound to
the new runtimes, waits until they have, and answers the caller. A worker asked for a reload
(`POST /admin/reload`, SIGHUP) forwards it to the parent and answers with the outcome; so does one
asked for a change of the config directory (an upload, an apply, a delete): the parent, which
alone commits changes, makes it, reloads every worker and answers (`AskChange`). Messages
travel pickled over one `multiprocessing.Pipe` per worker, read by the event loop and written by
a thread of the link's own (a worker that stops reading never blocks the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from starlette.applications import Starlette

from gateway.manifests import Config
from gateway.reload import (
    SHUTTING_DOWN,
    ConfigStager,
    Reloader,
    ReloadResult,
    SerialReloads,
    StagedConfig,
    abandoned,
    failed_reload,
)
from gateway.store.changes import ConfigChange
from gateway.store.journal import release_locks
from gateway.supervisor import ModelKey, RuntimeProcess

log = logging.getLogger("gateway.workers")  # the name from before the split, kept for log continuity

APPLY_TIMEOUT_S = 30.0  # a worker swaps in well under this; one that does not is not waited for
ANSWER_MARGIN_S = 30.0  # beyond staging and applying, for the parent to answer a worker's reload


@dataclass(frozen=True)
class AskReload:
    """worker -> parent: reload, then send `Answer(ask, ...)`."""

    ask: int


@dataclass(frozen=True)
class AskChange:
    """worker -> parent: make `change` (then reload every worker), then send `Answer(ask, ...)`."""

    ask: int
    change: ConfigChange


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
    """One end of a pipe: read by the running event loop, written by its own thread (a
    blocked write waits there, not on the loop). The sending thread closes the connection
    once the link is closed and no write is under way."""

    def __init__(self, connection: Connection, on_message: Callable[[object], None],
                 on_closed: Callable[[], None] = lambda: None) -> None:
        self.connection = connection
        self.on_message = on_message
        self.on_closed = on_closed
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._outbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._fd = connection.fileno()  # kept: the loop stops watching it before anyone closes it
        self._loop.add_reader(self._fd, self._readable)
        threading.Thread(target=self._write, name="gateway-link", daemon=True).start()

    def _readable(self) -> None:
        try:
            message = self.connection.recv()
        except (EOFError, OSError):
            self.close()
            return
        self.on_message(message)

    def send(self, message: object) -> None:
        """Queue `message` (dropped when the link is closed)."""
        if not self.closed:
            self._outbox.put(message)

    def _write(self) -> None:
        while (message := self._outbox.get()) is not _CLOSE:
            try:
                self.connection.send(message)
            except Exception:  # the other side is gone (or the message cannot go): the link ends
                log.warning("a message to another gateway process could not be sent; the link is closed",
                            exc_info=True)
                try:
                    self._loop.call_soon_threadsafe(self.close)
                except RuntimeError:  # the loop is closed: nobody watches the pipe any more
                    break
                # The loop stops watching the pipe first (close), then it is closed here: a
                # pipe closed under a watching loop can take the process down (uvloop).
                while self._outbox.get() is not _CLOSE:
                    pass
                break
        self.connection.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._fd)
        self._outbox.put(_CLOSE)
        self.on_closed()


_CLOSE = object()  # tells a link's sending thread to close the connection


def _sendable(result: ReloadResult) -> ReloadResult:
    """`result`, its `detail` dropped (and said so) if it cannot be pickled: an answer that
    cannot go would end the link to the worker."""
    try:
        pickle.dumps(result)
    except Exception as error:  # noqa: BLE001 - the worker is answered anyway
        log.error("the answer to a worker's change could not be sent whole: %s", error)
        result = dataclasses.replace(result, detail={})
    return result


class WorkerReloads(SerialReloads):
    """In the parent: stages each reload once and has every worker apply it."""

    def __init__(self, stager: ConfigStager, failed: Mapping[ModelKey, str], drain_timeout_s: float,
                 apply_timeout_s: float = APPLY_TIMEOUT_S) -> None:
        super().__init__(stager)
        self.failed = dict(failed)  # the current config's models without a runtime (for new workers)
        self.drain_timeout_s = drain_timeout_s
        self.apply_timeout_s = apply_timeout_s
        self.links: dict[int, _Link] = {}
        self._rounds = itertools.count(1)
        self._acks: dict[tuple[int, int], asyncio.Future[None]] = {}
        self._lost_in: dict[int, int] = {}  # round under way -> workers lost meanwhile
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def config(self) -> Config:
        return self.stager.config

    def attach(self, index: int) -> Connection:
        """A new pipe for worker `index` (replacing its previous one); returns the worker's end."""
        previous = self.links.pop(index, None)
        if previous is not None:
            previous.close()
        mine, theirs = multiprocessing.Pipe()
        link = _Link(mine, lambda message: self._received(index, message), lambda: self._lost(index, link))
        self.links[index] = link
        return theirs

    def _received(self, index: int, message: object) -> None:
        if isinstance(message, AskChange):
            self._spawn(self._answer(index, message.ask, message.change))
        elif isinstance(message, AskReload):
            self._spawn(self._answer(index, message.ask))
        elif isinstance(message, Applied):
            ack = self._acks.pop((index, message.round), None)
            if ack is not None and not ack.done():
                ack.set_result(None)

    def _lost(self, index: int, link: _Link) -> None:
        """Worker `index` is gone: nothing waits for it (its replacement starts on the current
        config)."""
        if self.links.get(index) is link:
            del self.links[index]
        for (worker, round_), ack in list(self._acks.items()):
            if worker == index and not ack.done():
                ack.set_result(None)
                del self._acks[(worker, round_)]
                if round_ in self._lost_in:
                    self._lost_in[round_] += 1

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, index: int, ask: int, change: ConfigChange | None = None) -> None:
        """Reload (after making `change`) for worker `index` and answer it, whatever happens (a
        worker waits for it)."""
        try:
            result = await (self.reload() if change is None else self.change(change))
        except asyncio.CancelledError:
            result = abandoned(None)
            raise
        except Exception as error:  # noqa: BLE001 - the asking worker is answered (500)
            result = failed_reload(error)
        finally:
            link = self.links.get(index)
            if link is not None:
                link.send(Answer(ask, _sendable(result)))

    async def _apply(self, staged: StagedConfig) -> ReloadResult:
        """Have every worker swap to `staged`."""
        retiring = self.stager.commit(staged)  # from now on new workers start on it
        self.failed = dict(staged.failed)
        config = staged.config
        result = ReloadResult(True, None, sorted(config.applications),
                              sorted(f"{name}:{version}" for name, version in config.models),
                              {f"{name}:{version}": reason for (name, version), reason in staged.failed.items()})
        self._swapped(result)  # committed: new workers start on it
        round_ = next(self._rounds)
        self._lost_in[round_] = 0
        loop = asyncio.get_running_loop()
        acks = []
        for index, link in list(self.links.items()):
            if link.closed:
                continue
            ack: asyncio.Future[None] = loop.create_future()
            self._acks[(index, round_)] = ack
            acks.append(ack)
            link.send(Apply(round_, config, staged.failed))
        try:
            _, late = await asyncio.wait(acks, timeout=self.apply_timeout_s) if acks else (set(), set())
        finally:
            lost = self._lost_in.pop(round_)
        if late:
            log.warning("%d workers did not confirm the reload within %gs; the runtimes it replaces "
                        "are kept until they do (or exit)", len(late), self.apply_timeout_s)
        if lost:
            log.warning("%d workers exited during the reload; their replacements start on the new config",
                        lost)
        self._spawn(self._retire_later(retiring, late))
        log.info("reloaded %d workers: %d applications, %d models", len(acks) - lost, len(config.applications),
                 len(config.models))
        return result

    async def _retire_later(self, runtimes: list[RuntimeProcess], late: set[asyncio.Future[None]]) -> None:
        """Stop the replaced runtimes after the drain timeout, and not before every worker that
        has not confirmed the swap yet (and may still route to them) has, or has exited."""
        await asyncio.sleep(self.drain_timeout_s)
        if late:
            await asyncio.wait(late)
        await self.stager.retire(runtimes)

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

    def __init__(self, connection: Connection, app: Starlette, answer_timeout_s: float,
                 apply_timeout_s: float = APPLY_TIMEOUT_S, change_timeout_s: float | None = None) -> None:
        self.app = app
        self.answer_timeout_s = answer_timeout_s
        self.change_timeout_s = answer_timeout_s if change_timeout_s is None else change_timeout_s
        self.apply_timeout_s = apply_timeout_s
        self._asks = itertools.count(1)
        self._answers: dict[int, asyncio.Future[ReloadResult]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._abandoned = False
        self.link = _Link(connection, self._received, self._lost)

    async def reload(self) -> ReloadResult:
        return await self._ask(AskReload, None, self.answer_timeout_s)

    async def change(self, change: ConfigChange) -> ReloadResult:
        """Have the parent make `change` and reload every worker (its answer, or 504 after
        `change_timeout_s`)."""
        try:
            pickle.dumps(change)
        except Exception as error:  # noqa: BLE001 - it would end the link; answered (500) instead
            return failed_reload(error)
        return await self._ask(AskChange, change, self.change_timeout_s)

    async def _ask(self, kind: type[AskReload] | type[AskChange], change: ConfigChange | None,
                   timeout_s: float) -> ReloadResult:
        if self._abandoned or self.link.closed:
            return ReloadResult(False, SHUTTING_DOWN, shutting_down=True)
        ask = next(self._asks)
        answer: asyncio.Future[ReloadResult] = asyncio.get_running_loop().create_future()
        self._answers[ask] = answer
        self.link.send(AskReload(ask) if kind is AskReload else AskChange(ask, change))  # type: ignore[arg-type]
        what = "reload" if kind is AskReload else "change"
        try:
            return await asyncio.wait_for(answer, timeout_s)
        except TimeoutError:
            log.error("the gateway's parent process did not answer a %s within %gs", what, timeout_s)
            return ReloadResult(False, f"the gateway's parent process did not answer within "
                                f"{timeout_s:g}s; the {what} may still apply", refused_status=504)
        finally:
            self._answers.pop(ask, None)

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
        deadline = asyncio.get_running_loop().time() + self.apply_timeout_s
        reloader: Reloader | None = getattr(self.app.state, "reloader", None)
        while reloader is None:  # the app is still starting
            if asyncio.get_running_loop().time() > deadline:
                log.error("cannot apply reload %d: this worker did not finish starting within %gs",
                          message.round, self.apply_timeout_s)
                return
            await asyncio.sleep(0.05)
            reloader = getattr(self.app.state, "reloader", None)
        try:
            await reloader.apply(message.config, message.failed)
        except Exception:  # this worker cannot serve the new config: it stops
            # and its replacement starts on the new config (the parent does not wait for it).
            log.exception("reload %d could not be applied in this worker; it stops and is replaced", message.round)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        self.link.send(Applied(message.round))

    def _lost(self) -> None:
        release_locks()  # the parent is gone: a gateway started in its place may recover the directory now
        self.abandon()

    def abandon(self) -> None:
        """Answer reloads still waiting for the parent at once (the worker is stopping)."""
        self._abandoned = True
        for answer in self._answers.values():
            if not answer.done():
                answer.set_result(ReloadResult(False, "the gateway's parent process is gone (the gateway is "
                                               "stopping); the reload was abandoned", shutting_down=True))
        self._answers.clear()
