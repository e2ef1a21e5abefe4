"""The binary path: raw little-endian tensor bytes with dtype and shape in headers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from gateway.app import create_app
from gateway.manifests import Config
from gateway.settings import Settings
from tests.conftest import serve_app

PREDICT = "/gateway/applications/increment_app"  # int32 [-1] -> int32 [-1]


def raw(dtype: str = "int32", shape: str | None = None) -> dict[str, str]:
    headers = {"content-type": "application/octet-stream", "x-tensor-dtype": dtype}
    if shape is not None:
        headers["x-tensor-shape"] = shape
    return headers


@pytest.fixture
async def client(example_config: Config) -> AsyncIterator[httpx.AsyncClient]:
    async with (serve_app(create_app(Settings(access_log=False), example_config)) as url,
                httpx.AsyncClient(base_url=url, timeout=10) as client):
        yield client


async def test_raw_tensor_in_raw_tensor_out(client: httpx.AsyncClient) -> None:
    values = np.arange(100_000, dtype="<i4")
    response = await client.post(PREDICT, content=values.tobytes(), headers=raw(shape="100000"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert (response.headers["x-tensor-name"], response.headers["x-tensor-dtype"],
            response.headers["x-tensor-shape"]) == ("number", "int32", "100000")
    assert np.array_equal(np.frombuffer(response.content, dtype="<i4"), values + 1)


@pytest.mark.parametrize("path", [PREDICT, "/gateway/models/increment_model/versions/1"])
async def test_a_tensor_of_megabytes_read_into_one_buffer_is_answered_right(client: httpx.AsyncClient,
                                                                            path: str) -> None:
    values = np.arange(-1_000_000, 1_000_000, 3, dtype="<i4")  # 2.7 MB: read into one buffer
    response = await client.post(path, content=values.tobytes(), headers=raw(shape=str(values.size)))
    assert response.status_code == 200, response.text
    assert np.array_equal(np.frombuffer(response.content, dtype="<i4"), values + 1)
    response = await client.post(path, content=values.tobytes() + b"\0", headers=raw())
    assert response.status_code == 400
    assert "not a whole number of int32 values" in response.json()["error"]["message"]


async def test_raw_tensors_are_answered_uncompressed_even_to_clients_accepting_gzip(
        client: httpx.AsyncClient) -> None:
    values = np.arange(300_000, dtype="<i4")  # compressible, and still sent as it is
    response = await client.post(PREDICT, content=values.tobytes(),
                                 headers={**raw(), "accept-encoding": "gzip, deflate"})
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert int(response.headers["content-length"]) == values.nbytes
    assert np.array_equal(np.frombuffer(response.content, dtype="<i4"), values + 1)
    as_json = await client.post(PREDICT, json={"number": values[:2000].tolist()}, headers={"accept-encoding": "gzip"})
    assert as_json.headers["content-encoding"] == "gzip"  # JSON answers are, as before


async def test_spaces_around_sizes_are_ignored(client: httpx.AsyncClient) -> None:
    response = await client.post(PREDICT, content=np.array([1, 2], "<i4").tobytes(), headers=raw(shape="1 , 2"))
    assert response.status_code == 400  # increment_app takes [-1]: the shape was read as [1, 2]
    assert "must have shape [-1], got [1, 2]" in response.json()["error"]["message"]


async def test_shape_defaults_to_one_dimension(client: httpx.AsyncClient) -> None:
    response = await client.post(PREDICT, content=np.array([1, 2], "<i4").tobytes(),
                                 headers={"content-type": "application/octet-stream"})
    assert np.frombuffer(response.content, dtype="<i4").tolist() == [2, 3]


@pytest.mark.parametrize(("body", "headers", "message"), [
    (b"\0" * 8, raw("float32"), "must be int32"),
    (b"\0" * 8, raw(shape="3"), "needs 12 bytes"),
    (b"\0" * 8, raw(shape="1,2"), "must have shape [-1]"),
    (b"\0" * 7, raw(), "whole number"),
    (b"\0" * 8, raw(shape="x"), "comma-separated"),
    *((b"\0" * 8, raw(shape=shape), "comma-separated") for shape in ("1_0", "1,,2", "2,", ",2", "+2", "-2", "2.0")),
    (b"\0" * 8, {**raw(), "x-tensor-name": "other"}, "not an input"),
])
async def test_contract_violations_are_400(client: httpx.AsyncClient, body: bytes, headers: dict[str, str],
                                           message: str) -> None:
    response = await client.post(PREDICT, content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "contract_violation"
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(("body", "shape", "message"), [
    (b"", "99999999999999999999", "larger than any tensor can be"),  # beyond 64 bits
    (b"", "4294967296,4294967296", "larger than any tensor can be"),  # 2**64 elements: 0 in 64 bits
    (b"\0" * 4, "274177,67280421310721", "larger than any tensor can be"),  # 2**64 + 1: 1 in 64 bits
    (b"\0" * 4, ",".join(["1"] * 65), "65 dimensions; a tensor has at most 64"),
    (b"", "0,99999999999999999999", "larger than any tensor can be"),  # empty, yet beyond numpy's bound
    (b"", "0,4611686018427387904", "larger than any tensor can be"),  # 2**62 int32 values
    (b"", "9" * 4301, "larger than any tensor can be"),  # more digits than int() reads
    (b"", "0," + "9" * 5000, "larger than any tensor can be"),
])
async def test_shapes_beyond_what_a_tensor_can_be_are_400(client: httpx.AsyncClient, body: bytes, shape: str,
                                                         message: str) -> None:
    response = await client.post(PREDICT, content=body, headers=raw(shape=shape))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("contract_violation", "number")
    assert message in error["message"]


async def test_the_model_routes_take_raw_tensors_too(client: httpx.AsyncClient) -> None:
    values = np.array([1, 2, 3], "<i4")
    response = await client.post("/gateway/models/increment_model/versions/1", content=values.tobytes(),
                                  headers=raw(shape="3"))
    assert response.status_code == 200, response.text
    assert response.headers["x-model-spec"].startswith("name=increment_model; version=1")
    assert response.headers["x-tensor-shape"] == "3"
    assert np.frombuffer(response.content, "<i4").tolist() == [2, 3, 4]
