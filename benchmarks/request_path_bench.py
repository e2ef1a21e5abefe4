"""The gateway's own CPU per request: the predict route driven in-process, without network and
with the backend's Predict answered at once (no gRPC), so that only the gateway's work is timed
(contract checks, codecs, limits, metrics, request id, access log, the ASGI plumbing).

`--stub backend` (the default) answers at the backend's `predict`; `--stub local-wire` answers at
the embedded runtime's local-wire call (`LocalChannel.call`), so the backend (request building,
answer decoding), the scheduling wrapper (call sharing) and the transports are timed too.

`--dialect native` times `POST /gateway/applications/<app>` with the native body, `--dialect v2`
`POST /v2/models/<app>/infer` with the v2 JSON body `make bench` sends (row M), and `--dialect
both` (the default) both in one run, alternating rounds so that the host's noise falls on each.

usage: PYTHONPATH=. .venv/bin/python benchmarks/request_path_bench.py [--payload small|medium]
       [--dialect native|v2|both] [--stub backend|local-wire] [--requests N] [--rounds N]
       [--access-log] [--profile [tottime|cumulative]]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from gateway.app import create_app
from gateway.backends.base import BackendCall, Prediction
from gateway.backends.local import LocalChannel
from gateway.backends.scheduling import ScheduledBackend
from gateway.backends.tfserving import TFServingBackend
from gateway.manifests import RuntimeAddress, load_config
from gateway.settings import Settings
from protos.runtime.calls_pb2 import PredictManyResponse
from protos.services import RUNTIME_PREDICT_MANY
from protos.tensorflow_serving.predict_pb2 import PredictRequest, PredictResponse
from tensorcodecs.tensor_proto import decode_tensor, fill_tensor

CONFIG = Path(__file__).parent / "configs" / "embedded"
_MEDIUM = np.arange(1000, dtype=np.float32) / 7
PAYLOADS = {  # (payload, dialect) -> body, application: as `make bench` sends them
    ("small", "native"): (b'{"number":[1]}', "increment"),
    ("medium", "native"): (orjson.dumps({"number": _MEDIUM}, option=orjson.OPT_SERIALIZE_NUMPY),
                           "increment_f32"),
    ("small", "v2"): (orjson.dumps({"inputs": [{"name": "number", "shape": [1], "datatype": "INT32",
                                                "data": [1]}]}), "increment"),
    ("medium", "v2"): (orjson.dumps({"inputs": [{"name": "number", "shape": [1000], "datatype": "FP32",
                                                 "data": _MEDIUM}]}, option=orjson.OPT_SERIALIZE_NUMPY),
                       "increment_f32"),
}
PATHS = {"native": "/gateway/applications/{}", "v2": "/v2/models/{}/infer"}


async def answer_at_once(self: object, call: BackendCall) -> Prediction:
    return Prediction({"number": call.inputs["number"] + 1})


def _add_one(request: PredictRequest, response: PredictResponse) -> None:
    fill_tensor(response.outputs["number"], decode_tensor(request.inputs["number"]) + 1)


async def wire_answers_at_once(self: object, method: Any, request: Any, timeout: float,
                               attachments: Any = None) -> Any:
    """The runtime's answer to a Predict or PredictMany on the local wire, made in place
    (payloads here are below the attachment size: every tensor is in the message)."""
    if method.path == RUNTIME_PREDICT_MANY.path:
        many = PredictManyResponse(seconds_per_request=1e-5)
        for item in request.requests:
            _add_one(item, many.results.add().response)
        return many
    response = PredictResponse()
    _add_one(request, response)
    return response


async def main(payload: str, dialects: list[str], stub: str, requests: int, rounds: int, access_log: bool,
               profile: str | None) -> None:
    if stub == "backend":
        # The backend's predict, outermost (the scheduling wrapper of an embedded runtime's model).
        ScheduledBackend.predict = answer_at_once  # type: ignore[method-assign]
        TFServingBackend.predict = answer_at_once  # type: ignore[method-assign]
        socket = None
    else:
        LocalChannel.call = wire_answers_at_once  # type: ignore[method-assign]
        socket = "/nonexistent/bench.sock"  # never opened: the call is answered in place
    config = load_config(CONFIG)
    config = config.with_targets({key: RuntimeAddress("127.0.0.1:1", socket)  # gRPC never dialled
                                  for key in config.models})
    app = create_app(Settings(log_level="warning", access_log=access_log), config)
    statuses: set[int] = set()

    async def send(message: Mapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    def runner(dialect: str) -> Callable[[int], Awaitable[None]]:
        body, application = PAYLOADS[payload, dialect]
        path = PATHS[dialect].format(application)
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8900"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8900),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def run(count: int) -> None:
            for _ in range(count):
                await app({**scope, "state": {}}, receive, send)

        return run

    runs = {dialect: runner(dialect) for dialect in dialects}
    async with app.router.lifespan_context(app):
        for dialect, run in runs.items():
            await run(2_000)
            assert statuses == {200}, f"the {dialect} warm-up was answered {sorted(statuses)}"
        timings: dict[str, list[float]] = {dialect: [] for dialect in dialects}
        for _ in range(rounds):
            for dialect, run in runs.items():
                started = time.perf_counter()
                await run(requests)
                timings[dialect].append((time.perf_counter() - started) / requests * 1e6)
        assert statuses == {200}, f"answered {sorted(statuses)}"
        for dialect, values in timings.items():
            print(f"{dialect:>6} {payload}: {statistics.median(values):.1f} µs per request (median of "
                  f"{rounds} rounds of {requests}; min {min(values):.1f}; in-process, no network, no gRPC; "
                  f"stubbed at the {stub})")
        if profile:
            for dialect, run in runs.items():
                print(f"--- profile: {dialect}")
                profiler = cProfile.Profile()
                profiler.enable()
                await run(requests)
                profiler.disable()
                pstats.Stats(profiler).sort_stats(profile).print_stats(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--payload", choices=("small", "medium"), default="small")
    parser.add_argument("--dialect", choices=("native", "v2", "both"), default="both",
                        help="the native application route, the v2 infer route, or both side by side")
    parser.add_argument("--stub", choices=("backend", "local-wire"), default="backend",
                        help="where the backend's answer is made (local-wire: the backend, scheduling and "
                             "transport layers are timed too)")
    parser.add_argument("--requests", type=int, default=10_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per dialect (median reported)")
    parser.add_argument("--access-log", action="store_true", help="write the access log (to stdout)")
    parser.add_argument("--profile", nargs="?", const="tottime", choices=("tottime", "cumulative"),
                        help="then profile each dialect's requests (sorted by tottime, or cumulative)")
    args = parser.parse_args()
    chosen = ["native", "v2"] if args.dialect == "both" else [args.dialect]
    asyncio.run(main(args.payload, chosen, args.stub, args.requests, args.rounds, args.access_log, args.profile))
