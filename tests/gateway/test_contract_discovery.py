"""Contract discovery against a real grpc.aio TF-Serving-protocol server that counts its
GetModelMetadata calls: one call shared by concurrent requests, a back-off after a failure,
a model still loading answered 503, and every stage of an application discovered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.backends import Selector
from gateway.backends.pool import ChannelPool
from gateway.dataplane import DataPlane, RequestContext
from gateway.errors import BackendUnavailable, GatewayError, NotFound
from gateway.lookups import BACKOFF_FIRST_S, BACKOFF_MAX_S, ByIdentity, SharedLookups
from gateway.manifests import Config, load_config
from gateway.registry import Application, Model, Registry, Stage, Variant
from gateway.settings import Settings
from tests.conftest import serve_app
from tests.gateway.test_tfserving_api import BATCH, RELOAD, V2, ManualClock, manual_clock, write_config
from tests.tfserving_server import FakeTFServing
from tests.waiting import eventually

LATEST = "/gateway/applications/toy_latest"  # model toy (TF Serving's Toy) at its default version, no declared contract


def latest_config(directory: Path, target: str) -> Config:
    """write_config's, and an application of toy's default version (whose contract
    `metadata_calls` counts the lookups of)."""
    write_config(directory, target)
    (directory / "applications" / "toy_latest.yaml").write_text(
        "kind: Application\nname: toy_latest\nsingular: {model: toy}\n")
    return load_config(directory)


def metadata_calls(server: FakeTFServing, model: str = "Toy") -> int:
    """The lookups of the contract of `model`'s default version (applications' variants that
    name a version or label have theirs looked up too)."""
    specs = [getattr(request, "model_spec") for method, request in server.calls  # noqa: B009
             if method == "GetModelMetadata"]
    return sum(1 for spec in specs if spec.name == model and not spec.HasField("version")
               and not spec.HasField("version_label"))


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
async def loading_server() -> AsyncIterator[FakeTFServing]:
    """A server that has not loaded Toy yet (it answers NOT_FOUND, as TF Serving does)."""
    server = FakeTFServing()
    server.repository["Toy_loading"] = server.loaded.pop("Toy")
    await server.start()
    yield server
    await server.stop()


def finish_loading(server: FakeTFServing) -> None:
    server.loaded["Toy"] = server.repository["Toy_loading"]


async def test_concurrent_requests_share_one_metadata_call(loading_server: FakeTFServing,
                                                           tmp_path: Path) -> None:
    app = create_app(Settings(access_log=False), latest_config(tmp_path / "config", loading_server.target))
    async with (serve_app(app) as url,
                httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_connections=60)) as client):
        assert metadata_calls(loading_server) == 1  # at start, answered NOT_FOUND
        clock = manual_clock(app)
        clock.advance(BACKOFF_FIRST_S)  # the failure at start no longer holds requests off
        finish_loading(loading_server)
        loading_server.hold = asyncio.Event()
        requests = [asyncio.ensure_future(client.post(LATEST, json={"input_1": BATCH})) for _ in range(50)]
        await until(lambda: app.state.metrics.serving == 50)  # every request is in the gateway
        loading_server.hold.set()
        answers = await asyncio.gather(*requests)
    assert [answer.status_code for answer in answers] == [200] * 50
    assert answers[0].json() == {"output_1": V2}
    assert metadata_calls(loading_server) == 2


async def test_a_model_still_loading_is_503_and_asked_again_only_after_a_back_off(
        loading_server: FakeTFServing, tmp_path: Path) -> None:
    app = create_app(Settings(access_log=False), latest_config(tmp_path / "config", loading_server.target))
    async with (serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client):
        clock = manual_clock(app)
        calls = metadata_calls(loading_server)
        window = BACKOFF_FIRST_S  # since the failure at start
        for expected in (1, 2, 4, 8, 16, 30, 30):  # each failure in a row doubles it, up to 30 s
            clock.advance(window)
            response = await client.post(LATEST, json={"input_1": BATCH})
            calls += 1
            assert metadata_calls(loading_server) == calls
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["code"] == "backend_unavailable"
            assert error["message"].startswith("model toy")
            assert "is not available on its backend yet: Servable not found" in error["message"]
            assert response.headers["retry-after"] == str(expected)
            window = expected
        assert window == BACKOFF_MAX_S
        clock.advance(29.2)
        for _ in range(20):  # within the window: answered without asking, Retry-After the time left
            held = await client.post(LATEST, json={"input_1": BATCH})
            assert (held.status_code, held.headers["retry-after"]) == (503, "1")
            v1 = await client.post("/v1/models/toy:predict", json={"instances": BATCH})
            assert (v1.status_code, v1.headers["retry-after"]) == (503, "1")
            assert "is not available on its backend yet" in v1.json()["error"]
        assert metadata_calls(loading_server) == calls
        missing = await client.post("/v1/models/toy/versions/7:predict", json={"instances": BATCH})
        assert missing.status_code == 404  # a version the request names: TF Serving's answer
        finish_loading(loading_server)
        clock.advance(1)
        response = await client.post(LATEST, json={"input_1": BATCH})
        assert response.json() == {"output_1": V2}


async def test_every_stage_of_an_application_is_discovered_before_it_runs(
        tfs_toy_double_loading: tuple[FakeTFServing, Registry]) -> None:
    server, registry = tfs_toy_double_loading
    declared, middle = registry.models[("toy_one", 1)], registry.models[("toy_double", 0)]
    stages = tuple(Stage(n, (Variant(model, 100),)) for n, model in enumerate((declared, middle, declared), start=1))
    app = Application("chain", stages, declared.signature, registry.applications["toy_v1"].manifest)
    dataplane = DataPlane(registry)
    clock = ManualClock()
    dataplane.contract_lookups.clock = clock
    with pytest.raises(BackendUnavailable, match="model toy_double:0 is not available on its backend yet"):
        await dataplane.with_contract(app, RequestContext.start("r", 5))
    assert metadata_calls(server, "Toy_double") == 1
    assert not any(method == "Predict" for method, _ in server.calls)  # no stage ran
    server.loaded["Toy_double"] = server.repository["Toy_double"]
    clock.advance(BACKOFF_FIRST_S)
    await dataplane.with_contract(app, RequestContext.start("r", 5))
    assert middle.signature.inputs["input_1"].shape == (-1, 2)  # the one the server describes
    assert metadata_calls(server, "Toy_double") == 2


@pytest.fixture
async def tfs_toy_double_loading(tmp_path: Path) -> AsyncIterator[tuple[FakeTFServing, Registry]]:
    """A server still loading Toy_double, and a registry of its models (nothing discovered)."""
    server = FakeTFServing()
    del server.loaded["Toy_double"]
    await server.start()
    pool = ChannelPool()
    yield server, Registry.build(write_config(tmp_path / "config", server.target), pool)
    await pool.close()
    await server.stop()


# ---------------------------------------------------------------- the lookups themselves

async def test_a_success_resets_the_back_off_and_a_caller_giving_up_does_not_cancel_it() -> None:
    clock = ManualClock()
    lookups: SharedLookups[str, int] = SharedLookups(clock)
    answers: list[int | GatewayError] = [BackendUnavailable("down"), BackendUnavailable("down"), 1,
                                         BackendUnavailable("down again"), 2]
    started, release = asyncio.Event(), asyncio.Event()

    async def lookup() -> int:
        started.set()
        await release.wait()
        answer = answers.pop(0)
        if isinstance(answer, GatewayError):
            raise answer
        return answer

    release.set()
    with pytest.raises(BackendUnavailable):
        await lookups.get("k", lookup)
    with pytest.raises(BackendUnavailable):  # held off, without asking
        await lookups.get("k", lookup)
    clock.advance(BACKOFF_FIRST_S)
    with pytest.raises(BackendUnavailable) as failed:
        await lookups.get("k", lookup)
    assert failed.value.retry_after_s == 1  # the second failure in a row: 1 s
    clock.advance(1)
    started.clear()
    release.clear()
    gives_up = asyncio.ensure_future(lookups.get("k", lookup))
    waits = asyncio.ensure_future(lookups.get("k", lookup))
    await started.wait()  # both callers are awaiting the one lookup (tasks run in order)
    gives_up.cancel()
    release.set()
    assert await waits == 1
    assert gives_up.cancelled()
    with pytest.raises(BackendUnavailable, match="down again"):  # successes are the caller's to keep
        await lookups.get("k", lookup)
    clock.advance(BACKOFF_FIRST_S)  # the back-off started over: 0.5 s, not 2 s
    assert await lookups.get("k", lookup) == 2
    assert answers == []


async def test_a_4xx_is_shared_by_concurrent_callers_but_not_remembered() -> None:
    clock = ManualClock()
    lookups: SharedLookups[str, int] = SharedLookups(clock)
    answers: list[int | GatewayError] = [BackendUnavailable("down"), NotFound("no version 7"),
                                         NotFound("no version 7"), 3]
    calls = 0
    release = asyncio.Event()

    async def lookup() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        answer = answers.pop(0)
        if isinstance(answer, GatewayError):
            raise answer
        return answer

    release.set()
    with pytest.raises(BackendUnavailable):
        await lookups.get("k", lookup)
    clock.advance(BACKOFF_FIRST_S)
    release.clear()
    callers = [asyncio.ensure_future(lookups.get("k", lookup)) for _ in range(3)]

    async def lookup_started() -> bool:  # by then all three await it (the tasks run in order)
        return calls == 2

    await eventually(lookup_started, what="the shared lookup started")
    release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert [type(o) for o in outcomes] == [NotFound] * 3
    assert calls == 2
    # the clock stands still: neither the 4xx nor the 503 before it holds the next caller off
    with pytest.raises(NotFound):
        await lookups.get("k", lookup)
    assert await lookups.get("k", lookup) == 3
    assert calls == 4


async def test_lookups_are_keyed_by_the_model_object_not_its_equal(
        tfs_toy_double_loading: tuple[FakeTFServing, Registry]) -> None:
    """A reload builds equal Models anew: one's failure is never another's, whatever the ids."""
    first = tfs_toy_double_loading[1].resolve("toy").model
    second = Model(first.manifest, first.backend)
    assert first == second
    assert ByIdentity(first) == ByIdentity(first)
    assert ByIdentity(first) != ByIdentity(second)
    assert len({(ByIdentity(first), None), (ByIdentity(second), None)}) == 2


async def test_a_version_deployed_after_a_404_is_answered_at_once(tmp_path: Path) -> None:
    server = FakeTFServing()
    version_2 = server.loaded["Toy"].pop(2)
    await server.start()
    try:
        app = create_app(Settings(access_log=False), write_config(tmp_path / "config", server.target))
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            manual_clock(app)  # no back-off window may pass
            path = "/v1/models/toy/versions/2:predict"
            missing = await client.post(path, json={"instances": BATCH})
            assert missing.status_code == 404, missing.text
            server.loaded["Toy"][2] = version_2
            answer = await client.post(path, json={"instances": BATCH})
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"predictions": V2}
    finally:
        await server.stop()


async def test_a_timeout_inside_the_lookup_is_not_the_callers_deadline(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeTFServing()
    await server.start()
    try:
        app = create_app(Settings(access_log=False), write_config(tmp_path / "config", server.target))
        async with serve_app(app):
            dataplane: DataPlane = app.state.dataplane
            target = dataplane.resolve("toy", Selector(2))

            async def times_out(*args: object) -> object:
                raise TimeoutError("the backend's own")

            monkeypatch.setattr(dataplane, "_describe", times_out)  # a fault inside the shared lookup
            with pytest.raises(TimeoutError, match="the backend's own"):
                await dataplane._signatures(target, 5.0)
    finally:
        await server.stop()


async def test_a_caller_with_a_short_deadline_neither_cuts_nor_fails_the_shared_lookup(
        loading_server: FakeTFServing, tmp_path: Path) -> None:
    app = create_app(Settings(access_log=False), latest_config(tmp_path / "config", loading_server.target))
    async with (serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client):
        manual_clock(app).advance(BACKOFF_FIRST_S)  # the failure at start no longer holds requests off
        finish_loading(loading_server)
        loading_server.hold = asyncio.Event()
        hurried = await client.post(LATEST, json={"input_1": BATCH}, headers={"x-request-timeout": "200"})
        assert hurried.status_code == 504, hurried.text
        assert metadata_calls(loading_server) == 2  # the lookup it started is still in flight
        patient = asyncio.ensure_future(client.post(LATEST, json={"input_1": BATCH}))
        await until(lambda: app.state.metrics.serving == 1)
        loading_server.hold.set()
        answer = await patient
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"output_1": V2}
    assert metadata_calls(loading_server) == 2  # the patient request shared the hurried one's lookup


# ---------------------------------------------------------------- the request id in the lookup

def metadata_request_ids(server: FakeTFServing, since: int = 0) -> list[str | None]:
    """The x-request-id of each GetModelMetadata call the server got (after the first `since` calls)."""
    return [metadata.get("x-request-id") for (method, _), metadata
            in list(zip(server.calls, server.metadata, strict=True))[since:] if method == "GetModelMetadata"]


async def test_a_contract_looked_up_for_a_request_carries_its_id_to_the_server(tmp_path: Path) -> None:
    server = FakeTFServing()
    await server.start()
    pool = ChannelPool()
    try:
        plane = DataPlane(Registry.build(write_config(tmp_path / "config", server.target), pool))
        await plane.with_contract(plane.application("toy_canary"), RequestContext.start("trace-11", 5))
        assert metadata_request_ids(server) == ["trace-11"]
        await plane.discover(5.0)  # at start or reload: no request
        discovered = metadata_request_ids(server)[1:]
        assert discovered
        assert set(discovered) == {None}
    finally:
        await pool.close()
        await server.stop()


async def test_reload_config_rediscovers_with_the_request_id(tmp_path: Path) -> None:
    server = FakeTFServing()
    await server.start()
    try:
        app = create_app(Settings(access_log=False), write_config(tmp_path / "config", server.target))
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            before = len(server.calls)
            response = await client.post("/gateway/admin/models/toy/reload-config", json=RELOAD,
                                         headers={"x-request-id": "trace-12"})
            assert response.status_code == 200, response.text
            rediscovered = metadata_request_ids(server, before)
            assert rediscovered
            assert set(rediscovered) == {"trace-12"}
            assert server.metadata[before].get("x-request-id") == "trace-12"  # the reload itself
    finally:
        await server.stop()
