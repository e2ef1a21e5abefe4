"""An integer beyond double range next to a float (kept exact by the parser that reads NaN) is
a client error on the native API, as other too-big values are: it was a 500 (an OverflowError
escaping the decoder)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.app import create_app
from gateway.manifests import Config
from gateway.settings import Settings
from tests.conftest import serve_app

BEYOND_DOUBLE = b"1" + b"0" * 400
JSON = {"content-type": "application/json"}


@pytest.fixture
async def client(example_config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_app(create_app(Settings(), example_config)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        yield client


async def test_native_routes_answer_out_of_range(client: httpx.AsyncClient) -> None:
    for features in (b"[[0.5, " + BEYOND_DOUBLE + b", 2], [NaN, 1.0, 2]]",
                     b"[[" + BEYOND_DOUBLE + b", NaN, 2]]"):
        for path in ("/gateway/applications/scaler_app", "/gateway/models/scaler_model"):
            response = await client.post(path, content=b'{"features": ' + features + b', "unit": "cm"}',
                                         headers=JSON)
            assert response.status_code == 400, response.text
            assert response.json() == {"error": {
                "code": "contract_violation", "field": "features",
                "message": "out of range for float32 (largest finite value 3.4028235e+38)"}}


async def test_tf_routes_of_a_native_model_answer_too_big(client: httpx.AsyncClient) -> None:
    too_big = "JSON Parse error: Number too big to be stored in double"
    bodies = {
        b'{"inputs": {"features": [[0.5, ' + BEYOND_DOUBLE + b', 2], [NaN, 1.0, 2]], "unit": "cm"}}': too_big,
        b'{"instances": [{"features": [0.5, ' + BEYOND_DOUBLE + b', 2], "unit": "cm"}, '
        b'{"features": [NaN, 1.0, 2], "unit": "cm"}]}':
            f"Failed to process element: 0 key: features of 'instances' list. Error: INVALID_ARGUMENT: {too_big}",
    }
    for body, message in bodies.items():
        response = await client.post("/v1/models/scaler_model:predict", content=body)
        assert response.status_code == 400, response.text
        assert response.json() == {"error": message}
