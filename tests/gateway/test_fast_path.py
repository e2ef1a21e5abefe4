"""The predict shortcut (the innermost layer of the one pipeline, gateway.pipeline.Endpoints)
answers, counts and logs exactly as the same route served by Starlette's router does."""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from gateway.app import create_app
from gateway.manifests import load_config
from gateway.observability import AccessLog, Metrics
from gateway.settings import ApiKey, AuthSettings, Settings
from tests.conftest import runtimes_for, serve_app, write_app, write_model

KEYS = AuthSettings(api_keys=(ApiKey("inc", hashlib.sha256(b"inc-key").hexdigest(), ("inc", "wide")),
                              ApiKey("other", hashlib.sha256(b"other-key").hexdigest(), ("nothing",))))
COMPARED_HEADERS = ("content-type", "content-length", "content-encoding", "vary", "x-request-id",
                    "www-authenticate", "retry-after")
WIDE = 400  # values in the `wide` answer: more than the 1,024 bytes gzip starts at

V2_BODY = {"id": "a", "inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1]}]}
REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("ok", {"json": {"x": [1, 2]}}),
    ("hydrosphere-spelling", {"url": "/gateway/application/inc", "json": {"x": [1]}}),
    ("large-answer", {"url": "/gateway/applications/wide", "json": {"x": [1]}}),
    ("large-answer-gzip", {"url": "/gateway/applications/wide", "json": {"x": [1]},
                           "headers": {"accept-encoding": "gzip"}}),
    ("small-answer-gzip", {"json": {"x": [1]}, "headers": {"accept-encoding": "gzip"}}),
    ("gzip-body", {"content": gzip.compress(b'{"x": [5]}'),
                   "headers": {"content-encoding": "gzip", "content-type": "application/json"}}),
    ("binary", {"content": np.array([1, 2], "<i4").tobytes(),
                "headers": {"content-type": "application/octet-stream", "x-tensor-dtype": "int32",
                            "x-tensor-shape": "2"}}),
    ("contract-violation", {"json": {"x": ["a"]}}),
    ("missing-input", {"json": {"y": [1]}}),
    ("invalid-json", {"content": b"{nope", "headers": {"content-type": "application/json"}}),
    ("unsupported-type", {"content": b"x=1", "headers": {"content-type": "text/plain"}}),
    ("unknown-application", {"url": "/gateway/applications/nope", "json": {"x": [1]}}),
    ("model-error", {"json": {"x": [-1]}}),
    ("bad-timeout", {"json": {"x": [1]}, "headers": {"x-request-timeout": "soon"}}),
    ("no-key", {"json": {"x": [1]}, "auth": None}),
    ("unknown-key", {"json": {"x": [1]}, "auth": "nope"}),
    ("key-not-allowed", {"json": {"x": [1]}, "auth": "other-key"}),
    ("v2", {"url": "/v2/models/inc/infer", "json": V2_BODY}),
    ("v2-large-answer-gzip", {"url": "/v2/models/wide/infer", "json": V2_BODY, "headers": {"accept-encoding": "gzip"}}),
    ("v2-binary-answer", {"url": "/v2/models/inc/infer",
                          "json": {**V2_BODY, "parameters": {"binary_data_output": True}}}),
    ("v2-contract-violation", {"url": "/v2/models/inc/infer",
                               "json": {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}}),
    ("v2-model-error", {"url": "/v2/models/inc/infer",
                        "json": {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [-1]}]}}),
    ("v2-no-key", {"url": "/v2/models/inc/infer", "json": V2_BODY, "auth": None}),
    ("v2-key-not-allowed", {"url": "/v2/models/inc/infer", "json": V2_BODY, "auth": "other-key"}),
    ("v2-version-of-an-application", {"url": "/v2/models/inc/versions/1/infer", "json": V2_BODY}),
]


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fast")
    write_model(path, "inc", "inc", "def predict(x):\n    if x[0] < 0:\n        raise ValueError('negative')\n"
                                    "    return {'y': x + 1}\n")
    write_model(path, "wide", "wide", "import numpy as np\ndef predict(x):\n"
                                      f"    return {{'y': (np.arange({WIDE}) + x[0]).astype(np.int32)}}\n")
    write_app(path, "inc", "inc")
    write_app(path, "wide", "wide")
    return path


async def answers(config_dir: Path, fast: bool) -> tuple[list[tuple[int, dict[str, str], bytes]], list[str],
                                                          list[dict[str, Any]]]:
    """Every request's answer, the request metrics and the access log of an app with the
    shortcut serving the application route, or without it (the router serving it)."""
    stream = io.StringIO()
    with runtimes_for(load_config(config_dir)) as config:
        app = create_app(Settings(auth=KEYS, access_log=False), config)
        app.state.observer.access_log = AccessLog(Metrics(), stream, interval_s=0.01)
        if not fast:
            app.fast_path = None
        results = []
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            for name, spec in REQUESTS:
                spec = dict(spec)
                auth = spec.pop("auth", "inc-key")
                headers = {"x-request-id": f"req-{name}", **spec.pop("headers", {})}
                if auth is not None:
                    headers["authorization"] = f"Bearer {auth}"
                headers.setdefault("accept-encoding", "identity")
                response = await client.post(spec.pop("url", "/gateway/applications/inc"), headers=headers, **spec)
                results.append((response.status_code,
                                {k: v for k, v in response.headers.items() if k in COMPARED_HEADERS},
                                response.content))
            metrics = (await client.get("/metrics")).text
        app.state.observer.access_log.close()
    counted = sorted(line for line in metrics.splitlines()
                     if line.startswith(("gateway_requests_total", "gateway_request_bytes_total",
                                         "gateway_response_bytes_total", "gateway_contract_errors_total"))
                     and "/metrics" not in line)
    log = [{k: v for k, v in orjson.loads(line).items() if k not in ("time", "duration_ms")}
           for line in stream.getvalue().splitlines() if b'"/metrics"' not in line.encode()]
    return results, counted, log


async def test_the_fast_path_is_indistinguishable_from_the_stack(config_dir: Path) -> None:
    fast, fast_metrics, fast_log = await answers(config_dir, fast=True)
    stack, stack_metrics, stack_log = await answers(config_dir, fast=False)
    for (name, _), fast_answer, stack_answer in zip(REQUESTS, fast, stack, strict=True):
        assert fast_answer == stack_answer, name
    assert fast_metrics == stack_metrics
    assert fast_log == stack_log
    statuses = {name: answer[0] for (name, _), answer in zip(REQUESTS, fast, strict=True)}
    assert statuses == {
        "ok": 200, "hydrosphere-spelling": 200, "large-answer": 200, "large-answer-gzip": 200,
        "small-answer-gzip": 200, "gzip-body": 200, "binary": 200, "contract-violation": 400,
        "missing-input": 400, "invalid-json": 400, "unsupported-type": 415, "unknown-application": 403,
        "model-error": 500, "bad-timeout": 400, "no-key": 401, "unknown-key": 401, "key-not-allowed": 403,
        "v2": 200, "v2-large-answer-gzip": 200, "v2-binary-answer": 200, "v2-contract-violation": 400,
        "v2-model-error": 500, "v2-no-key": 401, "v2-key-not-allowed": 403, "v2-version-of-an-application": 404,
    }
    large = dict(zip([n for n, _ in REQUESTS], fast, strict=True))
    assert large["large-answer"][1]["vary"] == "Accept-Encoding"
    assert large["large-answer-gzip"][1]["content-encoding"] == "gzip"
    assert "content-encoding" not in large["small-answer-gzip"][1]
    assert all(answer[1]["x-request-id"] == f"req-{name}" for (name, _), answer in zip(REQUESTS, fast, strict=True))
    assert len(fast_log) == len(REQUESTS)
    assert any('status="401"' in line for line in fast_metrics)
