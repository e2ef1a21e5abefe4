"""`gateway.client` against a real uvicorn serving the example config with its real runtimes:
both clients, every call through the same scenarios (the sync one in a thread)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.app import create_app
from gateway.client import AsyncClient, Client, GatewayTimeout, GatewayUnreachable
from gateway.errors import ContractViolation, GatewayError, NotFound, PermissionDenied, Unauthenticated
from gateway.manifests import Config, load_config
from gateway.settings import ApiKey, AuthSettings, Settings
from tests.conftest import free_port, runtimes_for, serve_app, write_app, write_model

AnyClient = Client | AsyncClient


@pytest.fixture
async def url(example_config: Config) -> AsyncIterator[str]:
    async with serve_app(create_app(Settings(access_log=False), example_config)) as url:
        yield url


async def call(client: AnyClient, method: str, *args: Any, **kwargs: Any) -> Any:
    """`client.method(...)`: awaited for the async client, in a thread for the blocking one
    (the server runs on this event loop)."""
    if isinstance(client, AsyncClient):
        return await getattr(client, method)(*args, **kwargs)
    return await asyncio.to_thread(getattr(client, method), *args, **kwargs)


@pytest.fixture(params=["sync", "async"])
async def client(request: pytest.FixtureRequest, url: str) -> AsyncIterator[AnyClient]:
    if request.param == "sync":
        with Client(url, timeout=10) as sync:
            yield sync
    else:
        async with AsyncClient(url, timeout=10) as asynchronous:
            yield asynchronous


async def test_lists_and_arrays_in_contract_dtypes_out(client: AnyClient) -> None:
    answer = await call(client, "predict", "increment_app", number=[1])
    assert list(answer) == ["number"]
    assert answer["number"].dtype == np.int32
    assert answer["number"].tolist() == [2]
    # An int64 array for an int32 input: sent as its values, the gateway checks the range.
    assert (await call(client, "predict", "increment_app", number=np.arange(3)))["number"].tolist() == [1, 2, 3]

    scaled = await call(client, "predict", "scaler_app", features=np.array([[3, 20, 150]], np.float32),
                        unit=np.str_("cm"))
    assert scaled["scaled"].dtype == np.float32
    assert scaled["scaled"].tolist() == [[1.0, 2.0, 1.0]]
    assert scaled["rows"].dtype == np.int64
    assert scaled["rows"].shape == ()
    assert int(scaled["rows"]) == 1
    assert scaled["unit"].dtype.kind == "U"
    assert str(scaled["unit"]) == "cm"

    phases = await call(client, "predict", "pipeline_app", fahrenheit=np.array([14, 212, 500], np.int64))
    assert phases["phase"].tolist() == ["ice", "steam", "steam"]

    mapping = await call(client, "predict", "increment_app", {"number": [3]})  # the inputs as one mapping
    assert mapping["number"].tolist() == [4]
    plain = await call(client, "predict", "scaler_app", as_lists=True, features=[[1.0, 10.0, 100.0]], unit="m")
    assert plain == {"scaled": [[0.0, 0.0, 0.0]], "rows": 1, "unit": "m"}


async def test_float64_and_nan_round_trips(client: AnyClient) -> None:
    kelvin = await call(client, "predict_model", "kelvin_model", celsius=np.array([0.0, 100.0], np.float32))
    assert kelvin["kelvin"].dtype == np.float64
    assert kelvin["kelvin"].tolist() == pytest.approx([273.15, 373.15])
    phase = await call(client, "predict_model", "phase_model", kelvin=np.array([300.0, np.nan]))
    assert phase["phase"].tolist() == ["water", "steam"]  # NaN went as the NaN literal (not null): not < 373.15
    scaled = await call(client, "predict", "scaler_app", features=[[float("nan"), 10.0, float("inf")]], unit="m")
    values = scaled["scaled"][0]
    assert np.isnan(values[0])  # answered as null, read back as NaN
    assert values[1] == 0.0
    assert np.isnan(values[2])  # infinity is null too in a JSON answer: NaN is all the client can read
    assert await call(client, "predict", "scaler_app", as_lists=True, features=[[np.nan, 10, 100]], unit="m") == {
        "scaled": [[None, 0.0, 0.0]], "rows": 1, "unit": "m"}


async def test_model_routes_by_version_and_default(client: AnyClient) -> None:
    answer = await call(client, "predict_model", "increment_model", number=[7])
    assert answer["number"].tolist() == [8]
    assert answer["number"].dtype == np.int32
    assert (await call(client, "predict_model", "increment_numpy", version=2, number=[1]))["number"].tolist() == [2]
    assert (await call(client, "predict_model", "increment_numpy", {"number": [1]}, version=1, as_lists=True)) == {
        "number": [2]}
    with pytest.raises(NotFound) as missing:
        await call(client, "predict_model", "increment_model", version=9, number=[1])
    assert missing.value.status == 404


def _counter(metrics: str, name: str, route: str) -> float:
    match = re.search(rf'^{name}_total{{route="{re.escape(route)}"}} (\S+)$', metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_a_large_numeric_array_goes_over_the_binary_path(client: AnyClient, url: str) -> None:
    route = "/gateway/applications/{name}"
    values = np.arange(100_000, dtype=np.int64)  # 800 kB; the contract's int32 holds every value: sent as int32
    async with httpx.AsyncClient(base_url=url) as raw:
        before = (await raw.get("/metrics")).text
        answer = await call(client, "predict", "increment_app", number=values)
        after = (await raw.get("/metrics")).text
    assert answer["number"].dtype == np.int32
    assert repr(answer["number"].dtype) == "dtype('int32')"  # native byte order, as a JSON answer's
    assert np.array_equal(answer["number"], values + 1)
    answer["number"] += 1  # writable, as a JSON answer's arrays are
    assert int(answer["number"][-1]) == 100_001
    # Raw int32: exactly 4 bytes per element, no JSON.
    assert _counter(after, "gateway_request_bytes", route) - _counter(before, "gateway_request_bytes", route) \
        == 400_000
    small = await call(client, "predict", "increment_app", as_lists=True, number=np.arange(10, dtype=np.int32))
    assert small == {"number": list(range(1, 11))}


async def test_float64_for_a_float32_contract_goes_raw_rounded_as_json_would(client: AnyClient, url: str) -> None:
    route = "/gateway/models/{name}"
    values = np.random.default_rng(7).normal(20, 30, 20_000)  # numpy's default float64; kelvin_model takes float32
    async with httpx.AsyncClient(base_url=url) as raw:
        before = (await raw.get("/metrics")).text
        answer = await call(client, "predict_model", "kelvin_model", celsius=values)
        after = (await raw.get("/metrics")).text
    assert _counter(after, "gateway_request_bytes", route) - _counter(before, "gateway_request_bytes", route) \
        == 80_000  # float32, 4 bytes per element
    async with AsyncClient(url, binary_threshold=None) as json_only:
        as_json = await json_only.predict_model("kelvin_model", celsius=values)
    assert np.array_equal(answer["kelvin"], as_json["kelvin"])
    with pytest.raises(ContractViolation) as beyond:  # beyond float32: refused, as JSON is, naming the element
        await call(client, "predict_model", "kelvin_model", celsius=np.full(20_000, 1e39))
    assert beyond.value.field == "celsius[0]"


async def test_an_input_is_accepted_or_refused_whatever_its_size(client: AnyClient) -> None:
    for size in (2, 70_000):  # JSON below the binary threshold, raw above it: the gateway's JSON rules both ways
        with pytest.raises(ContractViolation) as bools:
            await call(client, "predict", "increment_app", number=np.ones(size, bool))
        assert "expected an integer (int32), got true" in bools.value.message
        with pytest.raises(ContractViolation) as floats:
            await call(client, "predict", "increment_app", number=np.ones(size, np.float64))
        assert "expected an integer (int32)" in floats.value.message
        with pytest.raises(ContractViolation) as big:
            await call(client, "predict", "increment_app", number=np.full(size, 2**40))
        assert big.value.field == "number[0]"


async def test_errors_are_the_gateways_classes(client: AnyClient) -> None:
    with pytest.raises(ContractViolation) as bad:
        await call(client, "predict", "increment_app", number=["x"])
    assert (bad.value.status, bad.value.code, bad.value.field) == (400, "contract_violation", "number[0]")
    assert bad.value.request_id  # type: ignore[attr-defined]
    with pytest.raises(ContractViolation) as out_of_range:
        await call(client, "predict", "increment_app", number=np.array([2**40]))
    assert out_of_range.value.field == "number[0]"
    with pytest.raises(NotFound) as missing:
        await call(client, "predict", "nope", number=[1])
    assert missing.value.code == "not_found"
    with pytest.raises(GatewayError) as extra:
        await call(client, "predict", "increment_app", number=[1], other=[2])
    assert isinstance(extra.value, ContractViolation)
    assert extra.value.field == "other"


async def test_listings_are_typed(client: AnyClient) -> None:
    apps = {app.name: app for app in await call(client, "applications")}
    assert sorted(apps) == ["canary_app", "increment_app", "pipeline_app", "scaler_app"]
    assert apps["increment_app"].ready
    assert [(t.name, t.dtype, t.shape) for t in apps["scaler_app"].inputs or ()] == [
        ("features", "float32", (-1, 3)), ("unit", "string", ())]
    assert [v.model for v in apps["canary_app"].stages[0].variants] == [
        "increment_model:1", "increment_numpy:1", "increment_numpy:2"]
    models = await call(client, "models")
    increment = next(m for m in models if m.name == "increment_model")
    assert (increment.version, increment.kind, increment.state, increment.contract) == (1, "local", "ready", "declared")
    assert increment.applications == ("canary_app", "increment_app")
    assert await call(client, "ready") is True


@pytest.mark.parametrize("kind", [Client, AsyncClient])
async def test_unreachable_is_retried_within_the_deadline(kind: type[AnyClient]) -> None:
    port = free_port()  # bound, not listening: connections are refused
    client = kind(f"http://127.0.0.1:{port}", deadline=1.0, retries=50)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises((GatewayUnreachable, GatewayTimeout)) as failed:
            await call(client, "predict", "increment_app", number=[1])
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        if isinstance(client, AsyncClient):
            await client.aclose()
        else:
            client.close()
    assert failed.value.status is None
    assert 0.3 < elapsed < 1.5  # backed off and retried, then gave up at the deadline


@pytest.mark.parametrize("kind", [Client, AsyncClient])
def test_a_url_without_a_scheme_is_refused_at_once(kind: type[AnyClient], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=re.escape("an http:// or https:// URL with a host, got '127.0.0.1:8000'")):
        kind("127.0.0.1:8000")
    monkeypatch.setenv("GATEWAY_URL", "localhost:8000")
    with pytest.raises(ValueError, match="got 'localhost:8000'"):
        kind()


async def test_api_keys_401_and_403(example_config: Config) -> None:
    key = ApiKey(name="k", sha256=hashlib.sha256(b"secret").hexdigest(), applications=("increment_app",))
    settings = Settings(access_log=False, auth=AuthSettings(api_keys=(key,)))
    async with serve_app(create_app(settings, example_config)) as url:
        with Client(url) as anonymous:
            with pytest.raises(Unauthenticated) as refused:
                await asyncio.to_thread(anonymous.predict, "increment_app", number=[1])
            assert refused.value.status == 401
        async with AsyncClient(url, api_key="secret") as keyed:
            assert (await keyed.predict("increment_app", number=[1]))["number"].tolist() == [2]
            with pytest.raises(PermissionDenied):
                await keyed.predict("scaler_app", features=[[1, 2, 3]], unit="m")
            assert [app.name for app in await keyed.applications()] == ["increment_app"]


async def test_url_and_key_default_from_the_environment(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("GATEWAY_URL", url)
    monkeypatch.setenv("GATEWAY_API_KEY", "k1")
    async with AsyncClient() as client:
        assert client.url == url
        assert client.settings.headers()["authorization"] == "Bearer k1"
    monkeypatch.delenv("GATEWAY_URL")
    assert Client().url == "http://127.0.0.1:8000"


async def test_a_contract_changed_by_a_reload_is_read_again(tmp_path: Path) -> None:
    root = tmp_path / "config"
    write_model(root, "m/1", "m", "def predict(x):\n    return x + 1\n")
    write_model(root, "m/2", "m", "def predict(x):\n    return x + 2\n",
                inputs="x: {shape: [-1], type: float32}", outputs="y: {shape: [-1], type: float32}")
    write_app(root, "app", "m:1")
    settings = Settings(config_dir=root, access_log=False, drain_timeout_s=0.5)
    with runtimes_for(load_config(root)) as config:
        async with serve_app(create_app(settings, config)) as url, AsyncClient(url, binary_threshold=8) as client:
            values = np.arange(4, dtype=np.int32)
            first = await client.predict("app", x=values)  # binary, as int32: the contract's dtype
            assert (first["y"].dtype, first["y"].tolist()) == (np.int32, [1, 2, 3, 4])
            write_app(root, "app", "m:2")
            async with httpx.AsyncClient(base_url=url) as admin:
                assert (await admin.post("/admin/reload")).status_code == 200
            # The cached int32 contract makes a binary int32 request, refused: the contract is read
            # again and the request sent as float32's JSON.
            second = await client.predict("app", x=values)
            assert (second["y"].dtype, second["y"].tolist()) == (np.float32, [2.0, 3.0, 4.0, 5.0])
