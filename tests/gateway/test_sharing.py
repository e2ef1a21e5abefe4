"""Call sharing: requests arriving while every call is busy leave together, each answered on its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
import numpy as np

from gateway.app import create_app
from gateway.backends.base import BackendCall, NDArray, Prediction
from gateway.backends.capabilities import SharedAnswer
from gateway.backends.scheduling import ScheduledBackend
from gateway.backends.sharing import Multiplexer
from gateway.backends.tfserving import RuntimeBackend
from gateway.errors import BackendUnavailable, DeadlineExceeded, ModelError
from gateway.manifests import load_config
from gateway.settings import Settings
from tests.conftest import runtimes_for, serve_app, write_app, write_model
from tests.waiting import eventually


class Runtime:
    """Answers x + 1 after a pause; records how many requests each call carried."""

    def __init__(self, pause: float = 0.01, fail_call: bool = False) -> None:
        self.pause = pause
        self.fail_call = fail_call
        self.calls: list[int] = []
        self.request_ids: list[list[str]] = []
        self.started = asyncio.Event()  # set once a call is under way

    async def one(self, call: BackendCall) -> Prediction:
        return (await self.many([call], call.timeout))[0][0]  # type: ignore[return-value]

    async def many(self, calls: Sequence[BackendCall], timeout: float) -> SharedAnswer:
        self.calls.append(len(calls))
        self.request_ids.append([call.request_id for call in calls])
        self.started.set()
        await asyncio.sleep(self.pause)
        if self.fail_call:
            raise BackendUnavailable("backend t is unavailable: gone")
        return [ModelError("ValueError: negative") if int(call.inputs["x"][0]) < 0
                else Prediction({"y": call.inputs["x"] + 1}) for call in calls], self.pause


def multiplexer(runtime: Runtime, max_calls: int, max_items: int = 256) -> Multiplexer:
    return Multiplexer(runtime.one, runtime.many, "t", max_calls, max_items)


def call(inputs: Mapping[str, NDArray], timeout: float, request_id: str = "") -> BackendCall:
    return BackendCall(inputs, timeout, request_id)


async def test_unloaded_requests_go_alone() -> None:
    runtime = Runtime()
    shared = multiplexer(runtime, max_calls=2)
    for i in range(3):
        assert (await shared.predict(call({"x": np.array([i])}, 1.0))).outputs["y"].tolist() == [i + 1]
    assert runtime.calls == [1, 1, 1]


async def test_requests_waiting_for_a_call_share_the_next_and_get_their_own_answers() -> None:
    runtime = Runtime()
    shared = multiplexer(runtime, max_calls=1)
    answers = await asyncio.gather(*(shared.predict(call({"x": np.array([i, 10 * i])}, 1.0)) for i in range(20)))
    assert [a.outputs["y"].tolist() for a in answers] == [[i + 1, 10 * i + 1] for i in range(20)]
    assert runtime.calls == [1, 19]
    assert shared.running == 0


async def test_calls_carry_at_most_max_items() -> None:
    runtime = Runtime()
    shared = multiplexer(runtime, max_calls=1, max_items=4)
    await asyncio.gather(*(shared.predict(call({"x": np.array([i])}, 1.0)) for i in range(10)))
    assert max(runtime.calls) <= 4
    assert sum(runtime.calls) == 10


async def test_the_request_ids_of_shared_requests_travel_with_them() -> None:
    runtime = Runtime()
    shared = multiplexer(runtime, max_calls=1)
    await asyncio.gather(*(shared.predict(call({"x": np.array([i])}, 1.0, f"r{i}")) for i in range(4)))
    assert runtime.request_ids == [["r0"], ["r1", "r2", "r3"]]


async def test_a_failing_request_fails_alone() -> None:
    shared = multiplexer(Runtime(), max_calls=1)
    results = await asyncio.gather(*(shared.predict(call({"x": np.array([v])}, 1.0)) for v in (1, 2, -3, 4)),
                                   return_exceptions=True)
    assert [r.outputs["y"].tolist() if isinstance(r, Prediction) else type(r) for r in results] == \
        [[2], [3], ModelError, [5]]


async def test_a_failed_call_fails_every_request_in_it() -> None:
    shared = multiplexer(Runtime(fail_call=True), max_calls=1)
    results = await asyncio.gather(*(shared.predict(call({"x": np.array([i])}, 1.0)) for i in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(r, BackendUnavailable) for r in results)
    assert shared.running == 0


async def test_quick_models_share_calls_sooner_slow_ones_keep_their_parallelism() -> None:
    quick, slow = Runtime(pause=0.0001), Runtime(pause=0.02)
    quick_shared, slow_shared = multiplexer(quick, max_calls=8), multiplexer(slow, max_calls=8)
    for shared in (quick_shared, slow_shared):  # unknown models are taken for quick at first
        await asyncio.gather(*(shared.predict(call({"x": np.array([i])}, 5.0)) for i in range(64)))
        assert shared.call_limit() == (2 if shared is quick_shared else 8)
    assert slow.calls == [1, 1, 62]  # the first shared call told that the model is slow
    quick.calls.clear()
    slow.calls.clear()
    for shared in (quick_shared, slow_shared):
        await asyncio.gather(*(shared.predict(call({"x": np.array([i])}, 5.0)) for i in range(64)))
    assert quick.calls == [1, 1, 62]  # two calls at once, then everyone who waited together
    assert slow.calls[:8] == [1] * 8  # eight calls at once before any request waited


async def test_each_request_keeps_its_own_deadline() -> None:
    runtime = Runtime(pause=0.3)
    shared = multiplexer(runtime, max_calls=1)
    first = asyncio.ensure_future(shared.predict(call({"x": np.array([0])}, 5.0)))  # takes the only call
    await runtime.started.wait()
    started = time.monotonic()
    hasty = asyncio.ensure_future(shared.predict(call({"x": np.array([1])}, 0.1)))
    patient = asyncio.ensure_future(shared.predict(call({"x": np.array([2])}, 5.0)))
    results = await asyncio.gather(hasty, return_exceptions=True)
    assert isinstance(results[0], DeadlineExceeded)
    assert time.monotonic() - started < 0.25  # answered at its deadline, not when the call ended
    assert (await patient).outputs["y"].tolist() == [3]
    assert (await first).outputs["y"].tolist() == [1]


async def test_a_caller_that_goes_away_is_dropped() -> None:
    runtime = Runtime(pause=0.05)
    shared = multiplexer(runtime, max_calls=1)
    first = asyncio.ensure_future(shared.predict(call({"x": np.array([0])}, 1.0)))
    await runtime.started.wait()
    gone = asyncio.ensure_future(shared.predict(call({"x": np.array([1])}, 1.0)))
    stays = asyncio.ensure_future(shared.predict(call({"x": np.array([2])}, 1.0)))

    async def both_wait() -> bool:
        return len(shared._waiting) == 2

    await eventually(both_wait, what="two requests waiting for the call")
    gone.cancel()
    assert (await stays).outputs["y"].tolist() == [3]
    await first
    assert runtime.calls == [1, 1]  # the second call carried only the request still waiting


# ---------------------------------------------------------------- through the real runtime


async def _post_once_more_if_dropped(client: httpx.AsyncClient, path: str, body: object) -> httpx.Response:
    """POST `body`, once more if the connection dropped before an answer came: client, server
    and runtime share this test's loop and, on a loaded machine, a kept-alive connection may be
    gone when the client picks it up again; what the test checks is the answers' sharing."""
    try:
        return await client.post(path, json=body)
    except (httpx.ReadError, httpx.RemoteProtocolError):
        return await client.post(path, json=body)


async def test_concurrent_requests_to_the_embedded_runtime_share_calls(tmp_path: Path) -> None:
    source = ("import time\nimport numpy as np\n"
              "def predict(x):\n    time.sleep(0.002)\n"
              "    if x[0] < 0:\n        raise ValueError('negative')\n    return {'y': x + 1}\n")
    write_model(tmp_path, "inc", "inc", source)
    write_app(tmp_path, "inc", "inc")
    with runtimes_for(load_config(tmp_path)) as config:
        app = create_app(Settings(access_log=False), config)
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30,
                                                           limits=httpx.Limits(max_connections=64)) as client:
            values = [-1 if i % 17 == 5 else i for i in range(200)]
            answers = await asyncio.gather(*(_post_once_more_if_dropped(client, "/gateway/applications/inc",
                                                                        {"x": [v, v]}) for v in values))
            backend = app.state.dataplane.registry.models["inc", 1].backend
            assert isinstance(backend, ScheduledBackend)
            assert isinstance(backend.inner, RuntimeBackend)
            assert isinstance(backend.scheduler, Multiplexer)
            calls = backend.scheduler.calls
            # The model and TF Serving routes reach the pinned version through the scheduler too.
            assert (await client.post("/gateway/models/inc", json={"x": [1]})).json() == {"y": [2]}
            assert (await client.post("/v1/models/inc:predict", json={"inputs": {"x": [1]}})).json() == \
                {"outputs": [2]}
            assert backend.scheduler.calls == calls + 2
    assert isinstance(backend, ScheduledBackend)
    assert isinstance(backend.scheduler, Multiplexer)
    for value, answer in zip(values, answers, strict=True):
        if value < 0:
            assert answer.status_code == 500
            assert answer.json()["error"] == {"code": "model_error", "message": "ValueError: negative"}
        else:
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"y": [value + 1, value + 1]}
    assert backend.scheduler.calls < len(values)  # some calls carried several requests
    # The runtime says how long it spends per request (the function sleeps 2 ms), so the model
    # keeps as many calls at once as the runtime runs.
    assert 0.001 < backend.scheduler.seconds_per_request < 0.1
    assert backend.scheduler.call_limit() == backend.scheduler.max_calls
