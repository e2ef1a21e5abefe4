"""Where a model function runs: the calling gRPC thread, an event loop, or worker processes.

The gRPC server's thread pool bounds how many calls run at once; each invoker is called
from one of those threads and blocks it until the answer is ready. `many` answers several
independent requests carried by one call (PredictMany): for a synchronous function one after
another in the calling thread when it is quick (a thread hand-off would cost more than the
call), else spread over a pool of the runtime's size (a slow function may wait on I/O or
release the GIL); all at once on the event loop for async functions; spread over the worker
processes for `workers: N`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from modelfolder import RUNTIME_THREADS, ConfigError
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from runtime.errors import RuntimeCallError
from runtime.exits import exit_runtime
from runtime.model import LoadedModel, load_model
from runtime.styles import Attached, with_attached_inputs

log = logging.getLogger("runtime")


Outcome = PredictResponse | Exception  # one request's answer, or why it has none


class Invoker(Protocol):
    """Calls the model; `attached` (the local wire) gives the values of inputs that travelled
    beside the request, and takes large outputs out of the response when it can."""

    def __call__(self, request: PredictRequest, attached: Attached | None = None) -> PredictResponse: ...

    def many(self, requests: Sequence[PredictRequest],
             attached: Sequence[Attached | None] | None = None) -> list[Outcome]: ...

    def close(self) -> None: ...

    def warming(self) -> contextlib.AbstractContextManager[None]:
        """While warming up: calls reach every copy of the model (each worker process)."""
        ...


QUICK_CALL_S = 0.0002  # a function quicker than this runs a PredictMany's requests one by one


class InlineInvoker:
    """A synchronous function, called in the gRPC thread that received the request."""

    def __init__(self, model: LoadedModel, threads: int = RUNTIME_THREADS) -> None:
        self.model = model
        self.threads = threads
        self.seconds = 0.0  # moving average of one call of the function
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __call__(self, request: PredictRequest, attached: Attached | None = None) -> PredictResponse:
        started = time.perf_counter()
        try:
            return self.model.predict(request, attached)
        finally:
            self.seconds += 0.2 * (time.perf_counter() - started - self.seconds)

    def many(self, requests: Sequence[PredictRequest],
             attached: Sequence[Attached | None] | None = None) -> list[Outcome]:
        each = attached or [None] * len(requests)
        if len(requests) > 1 and self.seconds > QUICK_CALL_S:
            return list(self._spread().map(self._outcome, requests, each))
        return [self._outcome(request, side) for request, side in zip(requests, each, strict=True)]

    def _outcome(self, request: PredictRequest, attached: Attached | None) -> Outcome:
        try:
            return self(request, attached)
        except Exception as error:  # noqa: BLE001 - each request fails on its own
            return error
        except SystemExit as exit_:  # here in a pool thread too: the runtime ends, as for one call
            exit_runtime(exit_, f"thread {threading.current_thread().name}")

    def _spread(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="model-many")
            return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def warming(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # one copy of the model


class EventLoopInvoker:
    """An async function, awaited on one event loop that runs in its own thread."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="model-loop", daemon=True)
        self.thread.start()

    def __call__(self, request: PredictRequest, attached: Attached | None = None) -> PredictResponse:
        return asyncio.run_coroutine_threadsafe(self._guarded(request, attached), self.loop).result()

    async def _guarded(self, request: PredictRequest, attached: Attached | None) -> PredictResponse:
        try:
            return await self.model.predict_async(request, attached)
        except SystemExit as exit_:  # left to asyncio, it would stop the loop and every call hang
            exit_runtime(exit_, "the model's event loop")

    def many(self, requests: Sequence[PredictRequest],
             attached: Sequence[Attached | None] | None = None) -> list[Outcome]:
        each = attached or [None] * len(requests)

        async def gather() -> list[Outcome]:
            calls = (self._guarded(r, a) for r, a in zip(requests, each, strict=True))
            answers = await asyncio.gather(*calls, return_exceptions=True)
            return [a if isinstance(a, PredictResponse | Exception) else RuntimeError(repr(a))
                    for a in answers]

        return asyncio.run_coroutine_threadsafe(gather(), self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def warming(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # one copy of the model


# ---------------------------------------------------------------- worker processes

_worker_model: LoadedModel | None = None
_worker_loop: asyncio.AbstractEventLoop | None = None
_worker_error = ""
_worker_barrier: threading.Barrier | None = None  # every worker's, to have each answer one call


def _die_with_runtime(runtime_pid: int) -> None:
    """Have Linux SIGKILL this worker process when its runtime dies, however it dies (its
    pool's shutdown never runs then, and the worker would hold the runtime's output pipes)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != runtime_pid:  # it died before the request took effect
        os._exit(1)


def _init_worker(folder: str, runtime_pid: int, barrier: threading.Barrier) -> None:
    global _worker_model, _worker_loop, _worker_error, _worker_barrier
    _die_with_runtime(runtime_pid)
    _worker_barrier = barrier
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s runtime worker: %(message)s")
    try:
        _worker_model = load_model(Path(folder))
    except ConfigError as error:
        _worker_error = str(error)
        return
    except SystemExit as exit_:  # the runtime reports it as a model that does not load
        _worker_error = f"{folder}: the model called sys.exit({exit_.code!r}) while loading in a worker process"
        return
    if _worker_model.is_async:
        _worker_loop = asyncio.new_event_loop()


def _worker_ready(_: int) -> str:
    return _worker_error


def _worker_predict(request_bytes: bytes) -> bytes:
    assert _worker_model is not None, _worker_error
    request = PredictRequest.FromString(request_bytes)
    if _worker_loop is not None:
        response = _worker_loop.run_until_complete(_worker_model.predict_async(request))
    else:
        response = _worker_model.predict(request)
    return response.SerializeToString()


def _worker_predict_each(request_bytes: bytes) -> bytes:
    """One of N calls submitted at once: none answers before all N wait here, so each is
    answered by a different worker process."""
    assert _worker_barrier is not None
    _worker_barrier.wait()
    return _worker_predict(request_bytes)


def _whole(request: PredictRequest, attached: Attached | None) -> bytes:
    """The request for a worker process, attached inputs back in the message (its outputs
    come back in the response)."""
    return with_attached_inputs(request, attached.inputs if attached else {}).SerializeToString()


class WorkerPoolInvoker:
    """N worker processes, each with its own copy of the model, for CPU-bound functions."""

    def __init__(self, folder: Path, workers: int) -> None:
        context = multiprocessing.get_context("spawn")  # fork is unsafe beside gRPC's threads
        self.workers = workers
        self._every = False
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                        initargs=(str(folder), os.getpid(), context.Barrier(workers)))
        # Start every worker now (submitting N calls at once spawns N processes), so a model
        # that fails to load fails the runtime at start.
        for error in self.pool.map(_worker_ready, range(workers)):
            if error:
                self.pool.shutdown(cancel_futures=True)
                raise ConfigError(error)

    def __call__(self, request: PredictRequest, attached: Attached | None = None) -> PredictResponse:
        if self._every:
            return self._each(_whole(request, attached))
        return self._answer(self.pool.submit(_worker_predict, _whole(request, attached)))

    def _each(self, request_bytes: bytes) -> PredictResponse:
        """Every worker process answers the request; the first answer, or the first failure."""
        futures = [self.pool.submit(_worker_predict_each, request_bytes) for _ in range(self.workers)]
        answers: list[PredictResponse] = []
        failures: list[Exception] = []
        for future in futures:
            try:
                answers.append(self._answer(future))
            except Exception as error:  # noqa: BLE001 - every copy is waited for, the first failure raised
                failures.append(error)
        if failures:
            raise failures[0]
        return answers[0]

    @contextlib.contextmanager
    def warming(self) -> Iterator[None]:
        self._every = True
        try:
            yield
        finally:
            self._every = False

    def many(self, requests: Sequence[PredictRequest],
             attached: Sequence[Attached | None] | None = None) -> list[Outcome]:
        each = attached or [None] * len(requests)
        submitted = [self.pool.submit(_worker_predict, _whole(r, a)) for r, a in zip(requests, each, strict=True)]
        outcomes: list[Outcome] = []
        for future in submitted:
            try:
                outcomes.append(self._answer(future))
            except Exception as error:  # noqa: BLE001 - each request fails on its own
                outcomes.append(error)
        return outcomes

    @staticmethod
    def _answer(future: Future[bytes]) -> PredictResponse:
        try:
            answer = future.result()
        except SystemExit as exit_:  # the model's, in the worker process: the runtime ends with it
            exit_runtime(exit_, "a worker process")
        except RuntimeCallError:
            raise
        except Exception as error:
            raise RuntimeCallError(f"worker process failed: {type(error).__name__}: {error}") from error
        return PredictResponse.FromString(answer)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
